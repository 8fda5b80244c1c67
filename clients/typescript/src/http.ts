// One POST of a batch to the server, and the classification of its answer into what the worker
// must do next. No retry loop here (that is the worker's job); this module only knows HTTP and
// the server's answer formats.

import type { QueuedEvent } from "./queue.js";
import { parseRetryAfterMs } from "./timing.js";

/** An event the server (or the client, for an invalid emit) refused. Never retried. */
export interface Rejection {
  /** The event as it was sent (parsed back from its JSON), or null for an emit() that could not become an event. */
  event: Record<string, unknown> | null;
  /** The server's error code (e.g. `blank_id`, `forbidden`, `conflict`), or the client's (`invalid_event`). */
  code: string;
  message: string;
  /** The offending field, when known. */
  field: string | null;
  /** The HTTP status that applies to this event (422, 403, 409, 413, ...); 0 for a client-side refusal. */
  httpStatus: number;
}

export interface RejectedEvent {
  event: QueuedEvent;
  code: string;
  message: string;
  field: string | null;
  httpStatus: number;
}

export type Outcome =
  /** The server decided on every event: delivered (stored or duplicate) or rejected. `resend`
   *  lists events that were not stored and must be sent again (all-or-nothing mode only). */
  | { kind: "settled"; delivered: number; rejected: RejectedEvent[]; resend: QueuedEvent[] }
  /** Nothing decided: send the same events again later, not before retryAfterMs. */
  | { kind: "retry"; reason: string; retryAfterMs: number }
  /** 413 for the whole request: the batch must be split. */
  | { kind: "too_large"; reason: string }
  /** The server predates `?partial=true` (400 naming the parameter): fall back to all-or-nothing. */
  | { kind: "partial_unsupported" }
  /** The client is closing; the request was abandoned. */
  | { kind: "stopped" };

export interface PostOptions {
  baseUrl: string;
  apiKey: string;
  /** Per-request limit (connect + send + answer), in milliseconds. */
  timeoutMs: number;
  /** Aborted when the client stops: abandons the request at once. */
  stopSignal: AbortSignal;
  partial: boolean;
}

interface ErrorBody {
  code?: unknown;
  message?: unknown;
  field?: unknown;
  errors?: unknown;
}

export async function postBatch(events: QueuedEvent[], opts: PostOptions): Promise<Outcome> {
  // The bodies were serialized at emit time; joining them keeps each event byte-identical
  // across retries, which is what makes the server's event_id de-duplication work.
  let body = "[";
  for (let i = 0; i < events.length; i++) body += (i ? "," : "") + events[i].body;
  body += "]";

  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), opts.timeoutMs);
  timer.unref();
  const onStop = () => timeout.abort();
  opts.stopSignal.addEventListener("abort", onStop, { once: true });

  let status: number;
  let text: string;
  let retryAfter: string | null;
  try {
    const url = `${opts.baseUrl}/api/v2/interactions/batch${opts.partial ? "?partial=true" : ""}`;
    const res = await fetch(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${opts.apiKey}`,
        "content-type": "application/json",
      },
      body,
      signal: timeout.signal,
    });
    status = res.status;
    retryAfter = res.headers.get("retry-after");
    text = await res.text();
  } catch (err) {
    if (opts.stopSignal.aborted) return { kind: "stopped" };
    // Network error (refused, reset, DNS) or our timeout. The server may or may not have stored
    // the batch: resending is safe because the bodies (and event_ids) are identical.
    const reason = timeout.signal.aborted ? `no answer within ${opts.timeoutMs} ms` : describeNetworkError(err);
    return { kind: "retry", reason, retryAfterMs: 0 };
  } finally {
    clearTimeout(timer);
    opts.stopSignal.removeEventListener("abort", onStop);
  }
  return classify(events, status, text, retryAfter, opts.partial);
}

export function classify(
  events: QueuedEvent[],
  status: number,
  text: string,
  retryAfter: string | null,
  partial: boolean,
): Outcome {
  const json = parseJson(text);

  if (status === 207) return classifyPartial(events, json);
  if (status >= 200 && status < 300) return { kind: "settled", delivered: events.length, rejected: [], resend: [] };

  const err = errorOf(json);
  const code = typeof err.code === "string" ? err.code : `http_${status}`;
  const message = typeof err.message === "string" ? err.message : `HTTP ${status}`;
  const field = typeof err.field === "string" ? err.field : null;

  // Overload, shutdown, timeouts, storage trouble, proxies in between: nothing was decided.
  if (status === 408 || status === 429 || status >= 500 || status < 200 || (status >= 300 && status < 400)) {
    return { kind: "retry", reason: `HTTP ${status} ${code}`, retryAfterMs: parseRetryAfterMs(retryAfter) };
  }
  if (status === 413) return { kind: "too_large", reason: message };
  if (status === 400 && partial && field === "partial") return { kind: "partial_unsupported" };

  // All-or-nothing mode: a 422/409 lists the bad events by index and stored nothing, so the
  // others are sent again without them.
  if (!partial && (status === 422 || status === 409)) {
    const perIndex = indexedErrors(json, err);
    if (perIndex.size > 0) {
      const rejected: RejectedEvent[] = [];
      const resend: QueuedEvent[] = [];
      events.forEach((event, i) => {
        const e = perIndex.get(i);
        if (e) rejected.push({ event, httpStatus: status, ...e });
        else resend.push(event);
      });
      return { kind: "settled", delivered: 0, rejected, resend };
    }
  }

  // Any other whole-request 4xx (401 bad key, 403 role may not write, 400 malformed, ...):
  // retrying cannot help, so every event of the batch is reported as rejected.
  return {
    kind: "settled",
    delivered: 0,
    rejected: events.map((event) => ({ event, code, message, field, httpStatus: status })),
    resend: [],
  };
}

function classifyPartial(events: QueuedEvent[], json: unknown): Outcome {
  const results = (json as { results?: unknown } | null)?.results;
  let delivered = 0;
  const rejected: RejectedEvent[] = [];
  const byIndex = new Map<number, Record<string, unknown>>();
  if (Array.isArray(results)) {
    for (const r of results) {
      if (r && typeof r === "object" && Number.isInteger((r as { index?: unknown }).index)) {
        byIndex.set((r as { index: number }).index, r as Record<string, unknown>);
      }
    }
  }
  events.forEach((event, i) => {
    const r = byIndex.get(i);
    if (r && (r.status === "stored" || r.status === "duplicate")) {
      delivered++;
      return;
    }
    const e = errorOf(r?.error ?? null);
    rejected.push({
      event,
      code: typeof e.code === "string" ? e.code : r ? "error" : "missing_result",
      message: typeof e.message === "string" ? e.message : r ? "refused by the server" : "the server's 207 answer has no entry for this event",
      field: typeof e.field === "string" ? e.field : null,
      httpStatus: typeof r?.http_status === "number" ? r.http_status : 207,
    });
  });
  return { kind: "settled", delivered, rejected, resend: [] };
}

function indexedErrors(json: unknown, err: ErrorBody): Map<number, { code: string; message: string; field: string | null }> {
  // The list is documented at the top level (`errors`) and is also found inside `error`.
  const lists = [(json as { errors?: unknown } | null)?.errors, err.errors];
  const out = new Map<number, { code: string; message: string; field: string | null }>();
  for (const list of lists) {
    if (!Array.isArray(list)) continue;
    for (const e of list) {
      if (!e || typeof e !== "object" || !Number.isInteger(e.index)) continue;
      out.set(e.index, {
        code: typeof e.code === "string" ? e.code : "invalid",
        message: typeof e.message === "string" ? e.message : "refused by the server",
        field: typeof e.field === "string" ? e.field : null,
      });
    }
  }
  return out;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function errorOf(json: unknown): ErrorBody {
  if (!json || typeof json !== "object") return {};
  const e = (json as { error?: unknown }).error;
  return e && typeof e === "object" ? (e as ErrorBody) : (json as ErrorBody);
}

function describeNetworkError(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

/** The event of a rejection, parsed back for the onRejected callback. */
export function parseEventBody(body: string): Record<string, unknown> | null {
  const v = parseJson(body);
  return v && typeof v === "object" ? (v as Record<string, unknown>) : null;
}
