// Waiting without busy-waiting and without keeping the process alive.
//
// Every timer the worker arms is unref()ed: a logging client must never be the reason a
// process does not exit. (Exit is handled explicitly instead: see client.ts, beforeExit.)

/**
 * A level-triggered wake-up: wait() resolves at the next notify() or when its timeout passes.
 * A notify() that arrives while nobody waits is remembered, so a wake-up is never lost between
 * the worker checking its state and starting to wait.
 */
export class Wakeup {
  private pending = false;
  private waiter: (() => void) | null = null;

  notify(): void {
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w();
    } else {
      this.pending = true;
    }
  }

  /** Resolves at the next notify(), or after timeoutMs (never, if null). */
  wait(timeoutMs: number | null): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer !== undefined) clearTimeout(timer);
        if (this.waiter === done) this.waiter = null;
        resolve();
      };
      this.waiter = done;
      if (timeoutMs !== null) {
        timer = setTimeout(done, Math.max(0, timeoutMs));
        timer.unref();
      }
    });
  }
}

/**
 * Exponential backoff with full jitter (a uniformly random delay between 0 and the exponential
 * cap), so that many clients retrying against a recovering server spread out instead of
 * arriving in waves. attempt counts from 1.
 */
export function backoffDelayMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(random() * cap);
}

/** Parses a Retry-After header (delta-seconds or an HTTP date) into milliseconds; 0 if absent. */
export function parseRetryAfterMs(value: string | null, nowMs: number = Date.now()): number {
  if (value === null) return 0;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.ceil(parseFloat(trimmed) * 1000);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? 0 : Math.max(0, date - nowMs);
}

/** Resolves after ms, or as soon as signal aborts (the client is closing). Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    timer.unref();
    signal?.addEventListener("abort", done, { once: true });
  });
}
