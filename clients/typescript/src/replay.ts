// Reading the log back: GET /api/v2/events, the replay stream, as typed items.
//
// The stream is NDJSON. Each line is an event ({seq, received_at, key_id, event}), a gap
// ({"gap":{after_seq, next_seq, reason}}: no event holds a seq after after_seq and before
// next_seq, and none ever will), a heartbeat of a quiet follow stream, or an error line that ends
// the stream. A stream the server cut short (no closing chunk) is an error too, so a partial
// export never looks whole.

import http from "node:http";
import https from "node:https";

/** Why seqs are missing: before the oldest retained event, quarantined by `mcplog-seg repair`,
 *  or cut at start-up (a torn write or damage to the last write). */
export type GapReason = "retention" | "repair" | "cut";

/** One stored event. */
export interface ReplayEvent {
  kind: "event";
  seq: number;
  /** The server's receive time, Unix seconds. */
  receivedAt: number;
  /** The id of the key that sent it. */
  keyId: string;
  /** The client's event as it was stored. */
  event: Record<string, unknown>;
}

/** Seqs after `afterSeq` and before `nextSeq` that no event holds, and why. */
export interface Gap {
  kind: "gap";
  afterSeq: number;
  nextSeq: number;
  reason: GapReason;
}

/** A quiet follow stream is alive; `durableSeq` is the newest durable seq. */
export interface Heartbeat {
  kind: "heartbeat";
  /** Unix seconds. */
  at: number;
  durableSeq: number;
}

export type ReplayItem = ReplayEvent | Gap | Heartbeat;

/** The stream ended before its end: an error line (`code`, e.g. `unreadable_event` or
 *  `shutting_down`), an HTTP error answer (`status`), or a cut connection. `afterSeq` is where
 *  to resume, when known. */
export class ReplayError extends Error {
  constructor(
    message: string,
    readonly code: string | null = null,
    readonly status: number | null = null,
    readonly afterSeq: number | null = null,
  ) {
    super(message);
    this.name = "ReplayError";
  }
}

export interface ReplayOptions {
  /** The server's base URL, e.g. http://127.0.0.1:8080. */
  url: string;
  apiKey: string;
  /** Start after this seq (default 0: from the oldest retained event). */
  afterSeq?: number;
  /** Stop after this many events. */
  limit?: number;
  /** Only this mcp_id. */
  mcpId?: string;
  /** Keep the stream open and yield new events as they become durable. */
  follow?: boolean;
  /** Yield heartbeat items too (default: they are read and dropped). */
  heartbeats?: boolean;
  /** Aborting it ends the stream (the generator returns). */
  signal?: AbortSignal;
}

const EVENTS_PATH = "/api/v2/events";

/**
 * Yields the log's events after `afterSeq` in seq order, with a `Gap` item wherever seqs are
 * missing, until the end (or `limit` events); with `follow`, then each new event as it becomes
 * durable. Throws a `ReplayError` for an error answer, an error line or a cut stream.
 */
export async function* replay(options: ReplayOptions): AsyncGenerator<ReplayItem, void, undefined> {
  const afterSeq = options.afterSeq ?? 0;
  if (!Number.isSafeInteger(afterSeq) || afterSeq < 0) throw new TypeError("afterSeq must be a whole number >= 0");
  if (options.limit !== undefined && (!Number.isSafeInteger(options.limit) || options.limit <= 0)) {
    throw new TypeError("limit must be a whole number above 0");
  }
  const base = new URL(options.url);
  if (base.protocol !== "http:" && base.protocol !== "https:") throw new TypeError(`url must be http(s), got ${options.url}`);
  const query = new URLSearchParams({ after_seq: String(afterSeq) });
  if (options.limit !== undefined) query.set("limit", String(options.limit));
  if (options.mcpId !== undefined) query.set("mcp_id", options.mcpId);
  if (options.follow) query.set("follow", "true");
  const target = new URL(base.pathname.replace(/\/+$/, "") + EVENTS_PATH + "?" + query.toString(), base);

  const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const request = (target.protocol === "https:" ? https : http).get(
      target,
      { headers: { authorization: `Bearer ${options.apiKey}`, accept: "application/x-ndjson" }, signal: options.signal },
      resolve,
    );
    request.on("error", reject);
  }).catch((err: unknown) => {
    throw new ReplayError(`replay request failed: ${err instanceof Error ? err.message : String(err)}`);
  });
  if (response.statusCode !== 200) {
    let text = "";
    for await (const chunk of response) {
      text += chunk;
      if (text.length > 65_536) break;
    }
    let code: string | null = null;
    let message = text.slice(0, 200);
    try {
      const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
      if (typeof body.error?.code === "string") code = body.error.code;
      if (typeof body.error?.message === "string") message = body.error.message;
    } catch {
      // Not an mcplog error body: the text is the message.
    }
    throw new ReplayError(`replay answered ${response.statusCode}: ${message}`, code, response.statusCode ?? null);
  }
  response.setEncoding("utf8");
  let reached = afterSeq;
  let pending = "";
  try {
    for await (const chunk of response as AsyncIterable<string>) {
      pending += chunk;
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        const item = parseReplayLine(line);
        if (item === null) continue;
        if (item.kind === "event") reached = item.seq;
        else if (item.kind === "gap") reached = Math.max(reached, item.nextSeq - 1);
        else if (!options.heartbeats) continue;
        yield item;
      }
    }
  } catch (err) {
    if (err instanceof ReplayError) throw err;
    if (options.signal?.aborted) return;
    throw new ReplayError("the replay stream was cut before its end", null, null, reached);
  } finally {
    response.destroy();
  }
  if (!response.complete) {
    if (options.signal?.aborted) return;
    throw new ReplayError("the replay stream was cut before its end", null, null, reached);
  }
  if (pending.trim() !== "") throw new ReplayError("the replay stream ended inside a line", null, null, reached);
}

/** One line of the stream as a typed item; null for a blank line or a kind this client does not
 *  know (a newer server's). Throws a `ReplayError` for an error line. */
export function parseReplayLine(line: string): ReplayItem | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.seq === "number") {
    return {
      kind: "event",
      seq: v.seq,
      receivedAt: Number(v.received_at),
      keyId: String(v.key_id),
      event: v.event as Record<string, unknown>,
    };
  }
  const gap = v.gap as Record<string, unknown> | undefined;
  if (typeof gap === "object" && gap !== null) {
    return { kind: "gap", afterSeq: Number(gap.after_seq), nextSeq: Number(gap.next_seq), reason: gap.reason as GapReason };
  }
  if (typeof v.heartbeat === "number") {
    return { kind: "heartbeat", at: v.heartbeat, durableSeq: Number(v.durable_seq) };
  }
  const error = v.error as Record<string, unknown> | undefined;
  if (typeof error === "object" && error !== null) {
    throw new ReplayError(
      typeof error.message === "string" ? error.message : "the replay stream ended with an error",
      typeof error.code === "string" ? error.code : null,
      null,
      typeof error.after_seq === "number" ? error.after_seq : null,
    );
  }
  return null;
}
