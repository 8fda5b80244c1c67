// The background worker: takes batches off the queue, sends them, retries what the server did
// not decide on, and settles everything else (delivered or rejected). One batch is in flight at
// a time, in queue order, so "everything emitted before seq N is settled" is a single number.

import { postBatch, parseEventBody, type RejectedEvent, type Rejection } from "./http.js";
import type { EventQueue, QueuedEvent } from "./queue.js";
import { retryDelayMs, sleep, Wakeup } from "./timing.js";
import type { Warner } from "./warn.js";

export interface Counters {
  /** Events the server acknowledged (stored, or recognised as duplicates of stored ones). */
  delivered: number;
  /** Events refused for good: by the server (4xx) or at emit() (invalid call). Never retried. */
  rejected: number;
  /** Valid events that were never queued: the queue was full, or the client was closed. */
  dropped: number;
}

export interface FlushResult extends Counters {
  /** Events still queued or in flight. */
  pending: number;
}

export interface WorkerConfig {
  baseUrl: string;
  apiKey: string;
  batchMaxEvents: number;
  batchMaxBytes: number;
  lingerMs: number;
  requestTimeoutMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

interface FlushWaiter {
  seq: number;
  resolve: () => void;
}

export class Worker {
  private readonly wakeup = new Wakeup();
  private readonly stopController = new AbortController();
  private stopped = false;
  /** The batch being delivered; kept until settled so an unexpected error cannot lose it. */
  private current: QueuedEvent[] | null = null;
  /**
   * Events of `current` already delivered or rejected. After an unexpected error only the
   * others are sent again, so nothing is counted (or passed to onRejected) twice.
   */
  private readonly settledInCurrent = new Set<QueuedEvent>();
  /** Every event with seq <= settledSeq is delivered or rejected. */
  private settledSeq = 0;
  private readonly waiters = new Set<FlushWaiter>();
  /** Cleared when the server turns out to predate `?partial=true`. */
  private partial = true;
  readonly done: Promise<void>;

  constructor(
    private readonly queue: EventQueue,
    private readonly counters: Counters,
    private readonly config: WorkerConfig,
    private readonly warner: Warner,
    private readonly onRejected: (rejection: Rejection) => void,
  ) {
    this.done = this.run();
  }

  /** Called after each emit: wakes the worker if it is idle or lingering. */
  notify(): void {
    this.wakeup.notify();
  }

  get pending(): number {
    return this.queue.length + (this.current ? this.current.length - this.settledInCurrent.size : 0);
  }

  snapshot(): FlushResult {
    return { ...this.counters, pending: this.pending };
  }

  /**
   * Resolves when every event up to `seq` is settled, when timeoutMs passes, or when the worker
   * stops, whichever comes first. Its timer is NOT unref()ed: a caller awaiting a flush expects
   * the process to stay up for it (up to the timeout).
   */
  waitSettled(seq: number, timeoutMs: number): Promise<void> {
    if (seq <= this.settledSeq || this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiter: FlushWaiter = {
        seq,
        resolve: () => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.resolve, Math.max(0, timeoutMs));
      this.waiters.add(waiter);
      this.wakeup.notify(); // someone is waiting: stop lingering
    });
  }

  /** Stops the loop, abandons any request in flight, and releases flush waiters. Unsent events stay pending. */
  stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      this.stopController.abort();
      this.wakeup.notify();
      for (const w of [...this.waiters]) w.resolve();
    }
    return this.done;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.current === null) {
          if (this.queue.length === 0) {
            await this.wakeup.wait(null);
            continue;
          }
          await this.linger();
          if (this.stopped) break;
          this.current = this.queue.take(this.config.batchMaxEvents, this.config.batchMaxBytes).events;
          this.settledInCurrent.clear();
        }
        const batch = this.current;
        const unsettled = batch.filter((e) => !this.settledInCurrent.has(e));
        if (unsettled.length > 0) {
          await this.deliver(unsettled);
          if (this.stopped) break; // abandoned mid-way: its events stay pending
        }
        if (batch.length > 0) this.settle(batch[batch.length - 1].seq);
        this.current = null;
        this.settledInCurrent.clear();
      } catch (err) {
        // A bug must not kill the worker (events would then pile up silently until dropped).
        // The current batch is kept and its unsettled events are sent again: a duplicate on
        // the server is harmless, a loss is not.
        this.warner.warn("worker_error", `unexpected error in the delivery worker (will retry): ${(err as Error)?.stack ?? err}`);
        await sleep(this.config.backoffMaxMs, this.stopController.signal);
      }
    }
  }

  /**
   * Waits up to lingerMs for more events, so that a burst goes out as one request instead of
   * one request per event. Cut short when a batch is full, a flush is waiting, or on stop.
   */
  private async linger(): Promise<void> {
    const deadline = Date.now() + this.config.lingerMs;
    for (;;) {
      if (this.stopped || this.waiters.size > 0) return;
      if (this.queue.hasFullBatch(this.config.batchMaxEvents, this.config.batchMaxBytes)) return;
      const left = deadline - Date.now();
      if (left <= 0) return;
      await this.wakeup.wait(left);
    }
  }

  /** Sends events until each is delivered or rejected (or the worker stops). */
  private async deliver(events: QueuedEvent[]): Promise<void> {
    let todo = events;
    let attempt = 0;
    while (todo.length > 0 && !this.stopped) {
      const outcome = await postBatch(todo, {
        baseUrl: this.config.baseUrl,
        apiKey: this.config.apiKey,
        timeoutMs: this.config.requestTimeoutMs,
        stopSignal: this.stopController.signal,
        partial: this.partial,
      });
      switch (outcome.kind) {
        case "settled":
          for (const e of outcome.delivered) if (this.markSettled(e)) this.counters.delivered++;
          this.reject(outcome.rejected);
          todo = outcome.resend;
          attempt = 0;
          break;
        case "partial_unsupported":
          this.partial = false;
          this.warner.now("the server does not support ?partial=true (an older mcplog); sending batches all-or-nothing");
          break;
        case "too_large": {
          // Our batch limits exceed the server's: halve until it fits.
          const mid = Math.ceil(todo.length / 2);
          await this.deliver(todo.slice(0, mid));
          await this.deliver(todo.slice(mid));
          todo = [];
          break;
        }
        case "retry": {
          attempt++;
          const delay = retryDelayMs(attempt, this.config.backoffBaseMs, this.config.backoffMaxMs, outcome.retryAfterMs);
          this.warner.warn(
            "retry",
            `delivery failed (${outcome.reason}); retrying ${todo.length} events in ${delay} ms (attempt ${attempt}, ${this.pending} pending)`,
          );
          await sleep(delay, this.stopController.signal);
          break;
        }
        case "stopped":
          return;
      }
    }
  }

  private reject(rejected: RejectedEvent[]): void {
    for (const r of rejected) {
      if (!this.markSettled(r.event)) continue;
      this.counters.rejected++;
      const event = parseEventBody(r.event.body);
      this.warner.warn(
        "rejected",
        `event rejected by the server (${r.httpStatus} ${r.code}: ${r.message}) interaction_id=${JSON.stringify(event?.interaction_id)}`,
      );
      try {
        this.onRejected({ event, code: r.code, message: r.message, field: r.field, httpStatus: r.httpStatus });
      } catch (err) {
        this.warner.warn("on_rejected", `onRejected callback threw: ${(err as Error)?.message ?? err}`);
      }
    }
  }

  /**
   * Records that an event of the current batch is decided, before it is counted or reported:
   * should counting or reporting throw, the retry after the error skips it. False if it was
   * already settled.
   */
  private markSettled(event: QueuedEvent): boolean {
    if (this.settledInCurrent.has(event)) return false;
    this.settledInCurrent.add(event);
    return true;
  }

  private settle(seq: number): void {
    this.settledSeq = seq;
    for (const w of [...this.waiters]) if (w.seq <= seq) w.resolve();
  }
}
