// Warnings on stderr, rate-limited per kind: a full queue under load would otherwise print one
// line per dropped event and bury the application's own output (or slow it down).

export type Logger = (message: string) => void;

// A direct write rather than console.error: it is synchronous for files and pipes on Linux, so
// a warning printed while the process exits is not lost.
export const stderrLogger: Logger = (message) => {
  try {
    process.stderr.write(`mcplog: ${message}\n`);
  } catch {
    // stderr closed: nothing useful to do.
  }
};

export class Warner {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: Logger,
    /** At most one warning per kind in this many milliseconds. */
    private readonly intervalMs: number,
  ) {}

  /** Warns unless a warning of the same kind was printed less than intervalMs ago. */
  warn(kind: string, message: string): void {
    const now = Date.now();
    const prev = this.last.get(kind);
    if (prev && now - prev.at < this.intervalMs) {
      prev.suppressed++;
      return;
    }
    const note = prev && prev.suppressed > 0 ? ` (${prev.suppressed} similar warnings suppressed)` : "";
    this.last.set(kind, { at: now, suppressed: 0 });
    this.now(message + note);
  }

  /** Warns unconditionally (exit-time reports, one-off configuration notes). */
  now(message: string): void {
    try {
      this.logger(message);
    } catch {
      // A throwing logger must not break emit() or the worker.
    }
  }
}
