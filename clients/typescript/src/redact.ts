// Redaction: replace the values of named fields, at any depth of a payload, before the event is
// serialized and queued, so a secret never sits in the queue, in a retry, or on the wire.

export const REDACTED = "[redacted]";

/** Deepest nesting walked; the server refuses payloads nested deeper than 128 anyway. */
export const REDACT_MAX_DEPTH = 128;

export class RedactionError extends Error {}

/**
 * Builds a redactor for the given field names (matched case-insensitively, so `Password` and
 * `PASSWORD` are caught along with `password`). Returns null when there is nothing to redact,
 * so the caller skips the copy entirely.
 */
export function makeRedactor(fields: Iterable<string> | undefined): ((value: unknown) => unknown) | null {
  const names = new Set<string>();
  for (const f of fields ?? []) {
    if (typeof f === "string" && f.length > 0) names.add(f.toLowerCase());
  }
  if (names.size === 0) return null;
  return (value) => redactValue(value, names, 0, new Set());
}

// Returns a copy; the caller's object is never modified (it may still be in use by the tool).
function redactValue(value: unknown, names: Set<string>, depth: number, path: Set<object>): unknown {
  if (value === null || typeof value !== "object") return value;
  // Mirror JSON.stringify: an object with toJSON (Date, URL, ...) is serialized as what it returns.
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") {
    return redactValue(toJSON.call(value), names, depth, path);
  }
  if (depth >= REDACT_MAX_DEPTH) throw new RedactionError(`payload nested deeper than ${REDACT_MAX_DEPTH}`);
  if (path.has(value)) throw new RedactionError("payload contains a circular reference");
  path.add(value);
  try {
    if (Array.isArray(value)) {
      return value.map((v) => redactValue(v, names, depth + 1, path));
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = names.has(k.toLowerCase()) ? REDACTED : redactValue(v, names, depth + 1, path);
    }
    return out;
  } finally {
    path.delete(value);
  }
}
