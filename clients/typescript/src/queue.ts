// The bounded in-memory queue between emit() (the application's code path) and the worker.
// Bounded in events AND bytes, because either alone lets memory grow without limit: many tiny
// events, or a few huge ones. A full queue refuses the new event (the caller counts a drop)
// rather than evicting an older one: the oldest events are the ones a reader is most likely
// waiting for (the start of an interaction), and evicting them would orphan later events.

import type { SerializedEvent } from "./events.js";

export interface QueuedEvent extends SerializedEvent {
  /** Position in emit order, starting at 1; flush() waits for a position to be settled. */
  readonly seq: number;
}

export interface Batch {
  readonly events: QueuedEvent[];
  readonly bytes: number;
}

export class EventQueue {
  // An array with a moving head instead of Array.shift(), which is O(n) per call.
  private items: (QueuedEvent | undefined)[] = [];
  private head = 0;
  private bytesQueued = 0;
  private lastSeq = 0;

  constructor(
    /** Most events held at once. */
    readonly maxEvents: number,
    /** Most bytes (sum of the serialized events' UTF-8 lengths) held at once. */
    readonly maxBytes: number,
  ) {}

  get length(): number {
    return this.items.length - this.head;
  }

  get bytes(): number {
    return this.bytesQueued;
  }

  /** The seq of the last event accepted so far (0 if none). */
  get lastAcceptedSeq(): number {
    return this.lastSeq;
  }

  /** Adds an event; returns its seq, or 0 when the queue has no room for it. */
  push(event: SerializedEvent): number {
    if (this.length >= this.maxEvents || this.bytesQueued + event.bytes > this.maxBytes) return 0;
    const seq = ++this.lastSeq;
    this.items.push({ body: event.body, bytes: event.bytes, seq });
    this.bytesQueued += event.bytes;
    return seq;
  }

  /** True when a batch taken now would be full by count or by bytes (no point lingering). */
  hasFullBatch(maxEvents: number, maxBytes: number): boolean {
    return this.length >= maxEvents || this.bytesQueued >= maxBytes;
  }

  /**
   * Removes and returns up to maxEvents events whose bytes add up to at most maxBytes. The first
   * event is always taken, even if it alone is larger than maxBytes: otherwise it would block
   * the queue forever. (The server caps a single event at 1 MiB; payloadBytesMax keeps events
   * under that.)
   */
  take(maxEvents: number, maxBytes: number): Batch {
    const events: QueuedEvent[] = [];
    let bytes = 0;
    while (this.head < this.items.length && events.length < maxEvents) {
      const next = this.items[this.head] as QueuedEvent;
      if (events.length > 0 && bytes + next.bytes > maxBytes) break;
      events.push(next);
      bytes += next.bytes;
      this.items[this.head++] = undefined;
    }
    this.bytesQueued -= bytes;
    this.compact();
    return { events, bytes };
  }

  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}
