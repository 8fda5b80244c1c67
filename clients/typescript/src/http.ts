// One POST of a batch to the server, and the classification of its answer into what the worker
// must do next. No retry loop here (that is the worker's job); this module only knows HTTP and
// the server's answer formats.

import http from "node:http";
import https from "node:https";
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
   *  lists events that were not stored and must be sent again (all-or-nothing mode only).
   *  Events are named, not counted, so the worker can tell which ones are settled. */
  | { kind: "settled"; delivered: QueuedEvent[]; rejected: RejectedEvent[]; resend: QueuedEvent[] }
  /** Nothing decided: send the same events again later, not before retryAfterMs. */
  | { kind: "retry"; reason: string; retryAfterMs: number }
  /** 413 for the whole request of several events: the batch must be split. */
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

/**
 * Most bytes of an answer read. The server's largest answer (a 207 for 1000 events) is a few
 * hundred KiB; anything much larger is not the server's (a proxy's page, a wrong URL) and must
 * not be buffered without limit. Such an answer decides nothing, so the batch is retried.
 */
export const RESPONSE_BYTES_MAX = 4 * 1024 * 1024;

/** The parts of an HTTP answer that classify() needs. */
interface Answer {
  status: number;
  retryAfter: string | null;
  text: string;
}

class AnswerTooLargeError extends Error {}

export async function postBatch(events: QueuedEvent[], opts: PostOptions): Promise<Outcome> {
  if (opts.stopSignal.aborted) return { kind: "stopped" };
  // The bodies were serialized at emit time; joining them keeps each event byte-identical
  // across retries, which is what makes the server's event_id de-duplication work.
  let body = "[";
  for (let i = 0; i < events.length; i++) body += (i ? "," : "") + events[i].body;
  body += "]";

  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), opts.timeoutMs);
  timer.unref();
  const onStop = () => abort.abort();
  opts.stopSignal.addEventListener("abort", onStop, { once: true });

  let answer: Answer;
  try {
    const url = new URL(`${opts.baseUrl}/api/v2/interactions/batch${opts.partial ? "?partial=true" : ""}`);
    answer = await post(url, opts.apiKey, body, abort.signal);
  } catch (err) {
    if (opts.stopSignal.aborted) return { kind: "stopped" };
    // Network error (refused, reset, DNS), our timeout, or an oversized answer. The server may
    // or may not have stored the batch: resending is safe because the bodies (and event_ids)
    // are identical.
    const reason =
      err instanceof AnswerTooLargeError ? err.message : abort.signal.aborted ? `no answer within ${opts.timeoutMs} ms` : describeNetworkError(err);
    return { kind: "retry", reason, retryAfterMs: 0 };
  } finally {
    clearTimeout(timer);
    opts.stopSignal.removeEventListener("abort", onStop);
  }
  return classify(events, answer.status, answer.text, answer.retryAfter, opts.partial);
}

/**
 * One POST, with node:http(s) rather than fetch, for two reasons:
 * - fetch keeps its socket referenced while a request is in flight, so a program whose work is
 *   done would stay up until requestTimeoutMs before `beforeExit` even fired. This socket is
 *   unref()ed: how long the process stays up for delivery is decided by the exit flush
 *   (client.ts, exitFlushTimeoutMs), which aborts the request through `signal` at its limit.
 * - node:http never follows redirects: a 3xx reaches classify() (retried) instead of being
 *   followed as a GET that drops the batch.
 */
function post(url: URL, apiKey: string, body: string, signal: AbortSignal): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const request = url.protocol === "https:" ? https.request : http.request;
    const req = request(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${apiKey}`,
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
      },
      signal,
    });
    req.on("socket", (socket) => socket.unref());
    req.on("error", reject);
    req.on("response", (res) => readAnswer(res).then(resolve, reject));
    req.end(body);
  });
}

/** Reads the answer's body, at most RESPONSE_BYTES_MAX of it. */
function readAnswer(res: http.IncomingMessage): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    res.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > RESPONSE_BYTES_MAX) {
        res.destroy(new AnswerTooLargeError(`HTTP ${res.statusCode} answer larger than ${RESPONSE_BYTES_MAX} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    res.on("end", () => {
      const retryAfter = res.headers["retry-after"];
      resolve({ status: res.statusCode ?? 0, retryAfter: typeof retryAfter === "string" ? retryAfter : null, text: Buffer.concat(chunks).toString("utf8") });
    });
    res.on("error", reject);
    // Closed before the end (reset, aborted): a no-op after "end" or "error" settled the promise.
    res.on("close", () => reject(new Error("connection closed before the answer was complete")));
  });
}

export function classify(
  events: QueuedEvent[],
  status: number,
  text: string,
  retryAfter: string | null,
  partial: boolean,
): Outcome {
  const json = parseJson(text);

  if (status === 207) return classifyPartial(events, json, retryAfter);
  if (status >= 200 && status < 300) return { kind: "settled", delivered: events, rejected: [], resend: [] };

  const err = errorOf(json);
  const code = typeof err.code === "string" ? err.code : `http_${status}`;
  const message = typeof err.message === "string" ? err.message : `HTTP ${status}`;
  const field = typeof err.field === "string" ? err.field : null;

  // Overload, shutdown, timeouts, storage trouble, proxies in between: nothing was decided. The
  // server never answers 1xx or 3xx: such an answer is a proxy's or a wrong URL's.
  if (status === 408 || status === 429 || status >= 500 || status < 200 || (status >= 300 && status < 400)) {
    const hint = status >= 300 && status < 400 ? " (redirects are not followed: check the url)" : "";
    return { kind: "retry", reason: `HTTP ${status} ${code}${hint}`, retryAfterMs: parseRetryAfterMs(retryAfter) };
  }
  if (status === 413 && events.length > 1) return { kind: "too_large", reason: message };
  if (status === 400 && partial && field === "partial") return { kind: "partial_unsupported" };

  // All-or-nothing mode: a 403/409/422 that lists the refused events by index stored nothing,
  // so the others are sent again without them.
  if (!partial && (status === 403 || status === 409 || status === 422)) {
    const perIndex = indexedErrors(json, err, events.length);
    if (perIndex.size > 0) {
      const rejected: RejectedEvent[] = [];
      const resend: QueuedEvent[] = [];
      events.forEach((event, i) => {
        const e = perIndex.get(i);
        if (e) rejected.push({ event, httpStatus: status, ...e });
        else resend.push(event);
      });
      return { kind: "settled", delivered: [], rejected, resend };
    }
  }

  // Any other whole-request 4xx (401 bad key, 403 role may not write, 400 malformed, a 413 for
  // one event, a 4xx naming no event sent, ...): the same request would be refused again, so
  // every event of the batch is reported as rejected.
  return {
    kind: "settled",
    delivered: [],
    rejected: events.map((event) => ({ event, code, message, field, httpStatus: status })),
    resend: [],
  };
}

function classifyPartial(events: QueuedEvent[], json: unknown, retryAfter: string | null): Outcome {
  const byIndex = partialResults(json, events.length);
  if (byIndex === null) {
    // An answer we cannot read entry by entry decides nothing we can rely on. Resending is
    // safe: events the server did store come back as duplicates (same event_id, same body).
    return { kind: "retry", reason: "HTTP 207 without one result per event", retryAfterMs: parseRetryAfterMs(retryAfter) };
  }
  const delivered: QueuedEvent[] = [];
  const rejected: RejectedEvent[] = [];
  events.forEach((event, i) => {
    const r = byIndex.get(i) as Record<string, unknown>;
    if (r.status === "stored" || r.status === "duplicate") {
      delivered.push(event);
      return;
    }
    const e = errorOf(r.error ?? null);
    rejected.push({
      event,
      code: typeof e.code === "string" ? e.code : "error",
      message: typeof e.message === "string" ? e.message : "refused by the server",
      field: typeof e.field === "string" ? e.field : null,
      httpStatus: typeof r.http_status === "number" ? r.http_status : 207,
    });
  });
  return { kind: "settled", delivered, rejected, resend: [] };
}

/**
 * The 207's result entries by event index, or null unless `results` holds exactly one entry
 * (an object with an integer index in range) per event sent.
 */
function partialResults(json: unknown, count: number): Map<number, Record<string, unknown>> | null {
  const results = json && typeof json === "object" ? (json as { results?: unknown }).results : undefined;
  if (!Array.isArray(results) || results.length !== count) return null;
  const byIndex = new Map<number, Record<string, unknown>>();
  for (const r of results) {
    const index = r && typeof r === "object" ? (r as { index?: unknown }).index : undefined;
    if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index >= count || byIndex.has(index)) return null;
    byIndex.set(index, r as Record<string, unknown>);
  }
  return byIndex;
}

/**
 * The per-event errors of an all-or-nothing refusal, by index. Indexes outside the batch are
 * ignored: a list naming none of the events sent must refuse them all, or the batch would be
 * resent unchanged forever.
 */
function indexedErrors(json: unknown, err: ErrorBody, count: number): Map<number, { code: string; message: string; field: string | null }> {
  // The list is documented at the top level (`errors`) and is also found inside `error`.
  const lists = [(json as { errors?: unknown } | null)?.errors, err.errors];
  const out = new Map<number, { code: string; message: string; field: string | null }>();
  for (const list of lists) {
    if (!Array.isArray(list)) continue;
    for (const e of list) {
      if (!e || typeof e !== "object" || !Number.isInteger(e.index) || e.index < 0 || e.index >= count) continue;
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
