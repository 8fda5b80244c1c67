// McpLogClient: the application-facing API. emit() validates, redacts, serializes and queues on
// the caller's path (cheap, never throws, never waits); everything involving the network
// happens in the Worker.

import { InvalidEventError, serializeEvent, type ActionName, type EventFields, type SerializeContext } from "./events.js";
import type { Rejection } from "./http.js";
import { resolveOptions, type McpLogClientOptions, type ResolvedOptions } from "./options.js";
import { EventQueue } from "./queue.js";
import { makeRedactor } from "./redact.js";
import { replay, type ReplayItem, type ReplayOptions } from "./replay.js";
import { stderrLogger, Warner } from "./warn.js";
import { Worker, type Counters, type FlushResult } from "./worker.js";

/** Default time limit of flush() and close(), in ms, so neither can hang by default. */
export const DEFAULT_FLUSH_TIMEOUT_MS = 5_000;

export class McpLogClient {
  readonly options: Readonly<ResolvedOptions>;
  private readonly counters: Counters = { delivered: 0, rejected: 0, dropped: 0 };
  private readonly queue: EventQueue;
  private readonly worker: Worker;
  private readonly warner: Warner;
  private readonly serializeContext: SerializeContext;
  private readonly onRejected: (r: Rejection) => void;
  private closed = false;
  private closing: Promise<FlushResult> | null = null;
  private readonly exitHooks: { beforeExit: () => void; exit: () => void } | null = null;

  /** Throws a TypeError when the options are wrong (missing url/apiKey/mcpId, a bad limit). */
  constructor(options: McpLogClientOptions) {
    this.options = Object.freeze(resolveOptions(options));
    const o = this.options;
    this.warner = new Warner(o.logger ?? stderrLogger, o.warnIntervalMs);
    this.queue = new EventQueue(o.queueMaxEvents, o.queueMaxBytes);
    this.serializeContext = { mcpId: o.mcpId, payloadBytesMax: o.payloadBytesMax, redact: makeRedactor(o.redact) };
    this.onRejected = o.onRejected ?? (() => {});
    this.worker = new Worker(
      this.queue,
      this.counters,
      {
        baseUrl: o.url,
        apiKey: o.apiKey,
        batchMaxEvents: o.batchMaxEvents,
        batchMaxBytes: o.batchMaxBytes,
        lingerMs: o.lingerMs,
        requestTimeoutMs: o.requestTimeoutMs,
        backoffBaseMs: o.backoffBaseMs,
        backoffMaxMs: o.backoffMaxMs,
      },
      this.warner,
      this.onRejected,
    );
    if (o.flushOnExit) {
      this.exitHooks = { beforeExit: () => this.onBeforeExit(), exit: () => this.onExit() };
      process.on("beforeExit", this.exitHooks.beforeExit);
      process.on("exit", this.exitHooks.exit);
    }
  }

  /**
   * Reads the log back with this client's url and key (a writer key reads its own mcp_id only):
   * events in seq order, and a `gap` item wherever seqs are missing. See `replay()`.
   */
  replay(options: Omit<ReplayOptions, "url" | "apiKey"> = {}): AsyncGenerator<ReplayItem, void, undefined> {
    return replay({ ...options, url: this.options.url, apiKey: this.options.apiKey });
  }

  /**
   * Queues one event. Never throws and never waits: returns true if the event was queued, false
   * if it was dropped (queue full, client closed) or rejected (invalid call); both are counted
   * and warned about. `action` is the wire name or its short form (start, progress, complete,
   * error, cancelled); `fields` may hold the action's payload field (request_data, progress_data,
   * result_data, error_data, cancel_data) and timestamp, event_id, mcp_id.
   */
  emit(action: ActionName, interactionId: string, fields?: EventFields): boolean {
    try {
      if (this.closed) {
        this.counters.dropped++;
        this.warner.warn("closed", "emit() after close(): event dropped");
        return false;
      }
      let event;
      try {
        event = serializeEvent(action, interactionId, fields, this.serializeContext);
      } catch (err) {
        if (!(err instanceof InvalidEventError)) throw err;
        this.rejectInvalid(action, interactionId, err);
        return false;
      }
      if (this.queue.push(event) === 0) {
        this.counters.dropped++;
        this.warner.warn(
          "queue_full",
          `queue full (${this.queue.length} events, ${this.queue.bytes} bytes; limits queueMaxEvents=${this.queue.maxEvents}, queueMaxBytes=${this.queue.maxBytes}): event dropped, ${this.counters.dropped} dropped so far`,
        );
        return false;
      }
      this.worker.notify();
      return true;
    } catch (err) {
      // Anything unforeseen (a hostile getter in fields, say) still must not reach the caller.
      this.counters.dropped++;
      this.warner.warn("emit_error", `emit() failed, event dropped: ${(err as Error)?.message ?? err}`);
      return false;
    }
  }

  /**
   * Waits until every event emitted before this call is delivered or rejected, or until
   * timeoutMs passes. Never rejects. Returns the cumulative counters and what is still pending.
   */
  async flush(timeoutMs: number = DEFAULT_FLUSH_TIMEOUT_MS): Promise<FlushResult> {
    await this.worker.waitSettled(this.queue.lastAcceptedSeq, timeoutMs);
    return this.worker.snapshot();
  }

  /**
   * Flushes (up to timeoutMs), then stops the worker and abandons any request still in flight.
   * Later emits are dropped. Calling it again returns the same result.
   */
  close(timeoutMs: number = DEFAULT_FLUSH_TIMEOUT_MS): Promise<FlushResult> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      const seq = this.queue.lastAcceptedSeq;
      await this.worker.waitSettled(seq, timeoutMs);
      await this.worker.stop();
      this.removeExitHooks();
      return this.worker.snapshot();
    })();
    return this.closing;
  }

  /** The cumulative counters and the pending count, right now. */
  stats(): FlushResult {
    return this.worker.snapshot();
  }

  /** @internal Rate-limited warning through this client's logger (used by instrument()). */
  _warn(kind: string, message: string): void {
    this.warner.warn(kind, message);
  }

  private rejectInvalid(action: unknown, interactionId: unknown, err: InvalidEventError): void {
    this.counters.rejected++;
    this.warner.warn("invalid_event", `invalid emit() call, event rejected: ${err.message}`);
    try {
      this.onRejected({
        event: { action, interaction_id: interactionId },
        code: "invalid_event",
        message: err.message,
        field: err.field,
        httpStatus: 0,
      });
    } catch (cbErr) {
      this.warner.warn("on_rejected", `onRejected callback threw: ${(cbErr as Error)?.message ?? cbErr}`);
    }
  }

  // beforeExit fires when the event loop has nothing left to do (the worker's timers and its
  // request's socket are unref()ed, so they do not count, even mid-request). Closing here arms
  // a referenced timer of at most exitFlushTimeoutMs, which keeps the process alive just long
  // enough to deliver what is pending; then close() stops the worker, which aborts a request
  // still in flight, and the process exits.
  // process.exit() and signals do not fire beforeExit: such programs must await close() themselves.
  private onBeforeExit(): void {
    if (this.closing || this.worker.pending === 0) return;
    void this.close(this.options.exitFlushTimeoutMs).then((r) => {
      if (r.pending > 0) {
        this.warner.now(
          `exit: ${r.pending} events still pending after exitFlushTimeoutMs=${this.options.exitFlushTimeoutMs} ms were not delivered (delivered=${r.delivered} rejected=${r.rejected} dropped=${r.dropped})`,
        );
      }
    });
  }

  // The process is exiting without beforeExit (process.exit(), an uncaught exception): nothing
  // asynchronous can run any more, so all that is left is to say what is lost.
  private onExit(): void {
    const pending = this.worker.pending;
    if (pending > 0) {
      this.warner.now(`exit: ${pending} events pending were not delivered (call await client.close() before process.exit())`);
    }
  }

  private removeExitHooks(): void {
    if (this.exitHooks) {
      process.removeListener("beforeExit", this.exitHooks.beforeExit);
      process.removeListener("exit", this.exitHooks.exit);
    }
  }
}
