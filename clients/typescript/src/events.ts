// Events: turning an emit() call into the exact bytes that will be sent (and re-sent on retry).
//
// Each event is serialized exactly once, here, at emit time. The server makes retries
// idempotent by event_id, and answers 409 if the same event_id comes back with a different body,
// so a retry must resend byte-identical bodies: the queue therefore holds strings, not objects.

import { uuidv7 } from "./uuid.js";

export type Action =
  | "interaction_start"
  | "interaction_progress"
  | "interaction_complete"
  | "interaction_error"
  | "interaction_cancelled";

/** The one payload field each action carries. */
export const PAYLOAD_FIELD: Readonly<Record<Action, string>> = {
  interaction_start: "request_data",
  interaction_progress: "progress_data",
  interaction_complete: "result_data",
  interaction_error: "error_data",
  interaction_cancelled: "cancel_data",
};

const SHORT_ACTIONS: Readonly<Record<string, Action>> = {
  start: "interaction_start",
  progress: "interaction_progress",
  complete: "interaction_complete",
  error: "interaction_error",
  cancelled: "interaction_cancelled",
};

/** Fields emit() accepts besides the payload field of the action. */
const ENVELOPE_FIELDS = new Set(["timestamp", "event_id", "mcp_id"]);

export type ActionName = Action | keyof typeof SHORT_ACTIONS;

export interface EventFields {
  /** Seconds since the Unix epoch (float). Default: now. */
  timestamp?: number;
  /** Idempotency key, 1–128 bytes. Default: a UUIDv7. */
  event_id?: string;
  /** Overrides the client's mcpId for this event. */
  mcp_id?: string;
  request_data?: Record<string, unknown>;
  progress_data?: Record<string, unknown>;
  result_data?: Record<string, unknown>;
  error_data?: Record<string, unknown>;
  cancel_data?: Record<string, unknown>;
}

/** An emit() call that cannot become a valid event; reported as rejected, never thrown to the caller. */
export class InvalidEventError extends Error {
  constructor(
    message: string,
    readonly field: string | null,
  ) {
    super(message);
  }
}

export interface SerializedEvent {
  /** The JSON text of the event, sent as is on every attempt. */
  readonly body: string;
  /** UTF-8 length of body: what the byte limits count. */
  readonly bytes: number;
}

export interface SerializeContext {
  mcpId: string;
  /** Largest payload (serialized bytes) sent as is; a larger one is replaced by a marker. */
  payloadBytesMax: number;
  redact: ((value: unknown) => unknown) | null;
}

export function normalizeAction(action: unknown): Action | null {
  if (typeof action !== "string") return null;
  if (Object.prototype.hasOwnProperty.call(PAYLOAD_FIELD, action)) return action as Action;
  return Object.prototype.hasOwnProperty.call(SHORT_ACTIONS, action) ? SHORT_ACTIONS[action] : null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Validates an emit() call and returns its serialized event. Throws InvalidEventError. */
export function serializeEvent(
  actionArg: unknown,
  interactionId: unknown,
  fieldsArg: unknown,
  ctx: SerializeContext,
): SerializedEvent {
  const action = normalizeAction(actionArg);
  if (action === null) throw new InvalidEventError(`unknown action ${describe(actionArg)}`, "action");
  if (typeof interactionId !== "string" || interactionId.length === 0) {
    throw new InvalidEventError("interaction_id must be a non-empty string", "interaction_id");
  }
  const fields = fieldsArg ?? {};
  if (!isObject(fields)) throw new InvalidEventError("fields must be an object", null);

  const payloadField = PAYLOAD_FIELD[action];
  for (const key of Object.keys(fields)) {
    if (key !== payloadField && !ENVELOPE_FIELDS.has(key)) {
      throw new InvalidEventError(`field ${JSON.stringify(key)} is not allowed with ${action}`, key);
    }
  }

  const timestamp = fields.timestamp ?? Date.now() / 1000;
  if (typeof timestamp !== "number" || !Number.isFinite(timestamp)) {
    throw new InvalidEventError("timestamp must be a finite number of seconds", "timestamp");
  }
  const eventId = fields.event_id ?? uuidv7();
  if (typeof eventId !== "string" || eventId.length === 0) {
    throw new InvalidEventError("event_id must be a non-empty string", "event_id");
  }
  const mcpId = fields.mcp_id ?? ctx.mcpId;
  if (typeof mcpId !== "string" || mcpId.length === 0) {
    throw new InvalidEventError("mcp_id must be a non-empty string", "mcp_id");
  }

  let payloadJson: string | null = null;
  const payload = fields[payloadField];
  if (payload !== undefined) {
    if (!isObject(payload)) throw new InvalidEventError(`${payloadField} must be an object`, payloadField);
    let safe: unknown;
    try {
      safe = ctx.redact ? ctx.redact(payload) : payload;
      payloadJson = JSON.stringify(safe);
    } catch (err) {
      // Circular references, BigInt, a throwing toJSON: the payload cannot be represented.
      throw new InvalidEventError(`${payloadField} cannot be serialized: ${(err as Error).message}`, payloadField);
    }
    // A toJSON() (a Date, say) can turn an object into something else; the server wants an object.
    if (typeof payloadJson !== "string" || !payloadJson.startsWith("{")) {
      throw new InvalidEventError(`${payloadField} must serialize to a JSON object`, payloadField);
    }
    // A payload over the limit would make the server refuse the whole event (and lose the
    // interaction's lifecycle step); a marker keeps the step and says how big the payload was.
    const payloadBytes = Buffer.byteLength(payloadJson);
    if (payloadBytes > ctx.payloadBytesMax) payloadJson = JSON.stringify({ truncated: true, bytes: payloadBytes });
  }

  // The envelope is serialized separately and the payload spliced in, so that the (possibly
  // large) payload is stringified only once.
  const envelope = JSON.stringify({ action, interaction_id: interactionId, mcp_id: mcpId, timestamp, event_id: eventId });
  const body = payloadJson === null ? envelope : `${envelope.slice(0, -1)},"${payloadField}":${payloadJson}}`;
  return { body, bytes: Buffer.byteLength(body) };
}

function describe(v: unknown): string {
  try {
    return typeof v === "string" ? JSON.stringify(v) : String(v);
  } catch {
    return typeof v;
  }
}
