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

/**
 * How long to wait before retry `attempt` (from 1), in ms: the backoff, never sooner than the
 * server's Retry-After (already in ms; 0 when it gave none).
 */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number, retryAfterMs: number, random: () => number = Math.random): number {
  return Math.max(retryAfterMs, backoffDelayMs(attempt, baseMs, maxMs, random));
}

/**
 * A longer Retry-After counts as this long (ms): a proxy's "come back in a year" must not stop
 * delivery for good (nor overflow a timer, which Node would fire after 1 ms instead).
 */
export const RETRY_AFTER_MAX_MS = 24 * 60 * 60 * 1000;

// Retry-After's two forms: delta-seconds ("120", also "1.5") and an HTTP-date in the form every
// sender generates ("Wed, 21 Oct 2026 07:28:00 GMT"). Anything else is ignored.
const DELTA_SECONDS = /^\d+(\.\d+)?$/;
const HTTP_DATE = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** Parses a Retry-After header into milliseconds to wait; 0 if absent or not one of its two forms. */
export function parseRetryAfterMs(value: string | null, nowMs: number = Date.now()): number {
  if (value === null) return 0;
  const trimmed = value.trim();
  if (DELTA_SECONDS.test(trimmed)) return Math.min(Math.ceil(parseFloat(trimmed) * 1000), RETRY_AFTER_MAX_MS);
  const date = HTTP_DATE.test(trimmed) ? Date.parse(trimmed) : NaN;
  return Number.isNaN(date) ? 0 : Math.min(Math.max(0, date - nowMs), RETRY_AFTER_MAX_MS);
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
