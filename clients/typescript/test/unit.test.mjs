// Pure pieces, no server: ids, backoff, Retry-After, the queue's limits, answer classification.

import assert from "node:assert/strict";
import { test } from "node:test";
import { uuidv7 } from "../dist/index.js";
import { classify } from "../dist/http.js";
import { EventQueue } from "../dist/queue.js";
import { backoffDelayMs, parseRetryAfterMs } from "../dist/timing.js";
import { serializeEvent } from "../dist/events.js";

test("uuidv7: format, version, variant, time order, uniqueness", () => {
  const ids = Array.from({ length: 2000 }, () => uuidv7());
  for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(uuidv7(1000) < uuidv7(2000));
  assert.equal(uuidv7(0x0123456789ab).slice(0, 13), "01234567-89ab");
});

test("backoff: full jitter under an exponential cap", () => {
  assert.equal(backoffDelayMs(1, 100, 10_000, () => 0.999999), 99);
  assert.equal(backoffDelayMs(4, 100, 10_000, () => 0.999999), 799);
  assert.equal(backoffDelayMs(50, 100, 10_000, () => 0.999999), 9999);
  assert.equal(backoffDelayMs(3, 100, 10_000, () => 0), 0);
});

test("Retry-After: seconds and HTTP dates", () => {
  assert.equal(parseRetryAfterMs(null), 0);
  assert.equal(parseRetryAfterMs("1"), 1000);
  assert.equal(parseRetryAfterMs(" 2.5 "), 2500);
  assert.equal(parseRetryAfterMs(new Date(10_000).toUTCString(), 7_000), 3000);
  assert.equal(parseRetryAfterMs("soon"), 0);
});

test("queue: bounded by events and bytes, FIFO, batches by count and bytes", () => {
  const q = new EventQueue(3, 100);
  const ev = (n) => ({ body: "x".repeat(n), bytes: n });
  assert.equal(q.push(ev(10)), 1);
  assert.equal(q.push(ev(10)), 2);
  assert.equal(q.push(ev(90)), 0, "over the byte limit");
  assert.equal(q.push(ev(10)), 3);
  assert.equal(q.push(ev(1)), 0, "over the event limit");
  const b = q.take(2, 1000);
  assert.deepEqual(b.events.map((e) => e.seq), [1, 2]);
  assert.equal(q.length, 1);
  assert.equal(q.bytes, 10);
  assert.equal(q.push(ev(50)), 4);
  assert.deepEqual(q.take(10, 30).events.map((e) => e.seq), [3], "byte limit of a batch");
  assert.deepEqual(q.take(10, 30).events.map((e) => e.seq), [4], "an event over the batch byte limit still goes alone");
  assert.equal(q.length, 0);
});

const events = (n) => Array.from({ length: n }, (_, i) => ({ body: `{"i":${i}}`, bytes: 7, seq: i + 1 }));

test("classify: 207 entries, retryable statuses, whole-request 4xx, old servers", () => {
  const partial = classify(events(3), 207, JSON.stringify({
    status: "partial",
    results: [
      { index: 0, status: "stored", seq: 1 },
      { index: 1, status: "duplicate", seq: 1 },
      { index: 2, status: "error", http_status: 422, error: { code: "blank_id", message: "m", field: "interaction_id" } },
    ],
  }), null, true);
  assert.equal(partial.kind, "settled");
  assert.deepEqual(partial.delivered.map((e) => e.seq), [1, 2]);
  assert.equal(partial.rejected.length, 1);
  assert.deepEqual({ ...partial.rejected[0], event: undefined }, { event: undefined, code: "blank_id", message: "m", field: "interaction_id", httpStatus: 422 });

  for (const s of [429, 503, 500, 502, 507]) assert.equal(classify(events(1), s, "", "1", true).kind, "retry");
  assert.equal(classify(events(1), 503, "", "3", true).retryAfterMs, 3000);
  assert.equal(classify(events(2), 413, "{}", null, true).kind, "too_large");

  const unauthorized = classify(events(2), 401, JSON.stringify({ error: { code: "unauthorized", message: "no" } }), null, true);
  assert.equal(unauthorized.kind, "settled");
  assert.equal(unauthorized.rejected.length, 2);
  assert.equal(unauthorized.rejected[0].code, "unauthorized");

  const old = classify(events(1), 400, JSON.stringify({ error: { code: "bad_parameter", message: "x", field: "partial" } }), null, true);
  assert.equal(old.kind, "partial_unsupported");

  // All-or-nothing 422: the listed events are rejected, the others are to be sent again.
  const aon = classify(events(3), 422, JSON.stringify({ error: { code: "invalid_batch", errors: [{ index: 1, code: "bad_length", message: "m", field: "interaction_id" }] } }), null, false);
  assert.equal(aon.kind, "settled");
  assert.deepEqual(aon.resend.map((e) => e.seq), [1, 3]);
  assert.deepEqual(aon.rejected.map((r) => r.event.seq), [2]);
});

test("classify: a 207 without exactly one result per event is retried, not rejected", () => {
  const ok = (index) => ({ index, status: "stored", seq: 1 });
  const unreadable = [
    "",
    "<html>bad gateway</html>",
    "null",
    JSON.stringify({ status: "partial" }),
    JSON.stringify({ results: "nope" }),
    JSON.stringify({ results: [ok(0), ok(1)] }), // fewer entries than events
    JSON.stringify({ results: [ok(0), ok(1), ok(2), ok(3)] }), // more
    JSON.stringify({ results: [ok(0), ok(0), ok(2)] }), // an index twice, one missing
    JSON.stringify({ results: [ok(0), ok(1), ok(7)] }), // an index out of range
    JSON.stringify({ results: [ok(0), ok(1), { status: "stored" }] }), // no index
    JSON.stringify({ results: [ok(0), ok(1), null] }),
  ];
  for (const text of unreadable) {
    const o = classify(events(3), 207, text, "2", true);
    assert.equal(o.kind, "retry", text);
    assert.equal(o.retryAfterMs, 2000, text);
  }
  // Entries in any order are fine as long as each event has one.
  const shuffled = classify(events(3), 207, JSON.stringify({ results: [ok(2), ok(0), ok(1)] }), null, true);
  assert.equal(shuffled.kind, "settled");
  assert.equal(shuffled.delivered.length, 3);
});

test("serializeEvent: short actions, field order, payload spliced once", () => {
  const e = serializeEvent("start", "id-1", { timestamp: 1.5, event_id: "e", request_data: { a: [1, "é"] } }, { mcpId: "m", payloadBytesMax: 1000, redact: null });
  assert.equal(e.body, '{"action":"interaction_start","interaction_id":"id-1","mcp_id":"m","timestamp":1.5,"event_id":"e","request_data":{"a":[1,"é"]}}');
  assert.equal(e.bytes, Buffer.byteLength(e.body));
  const bare = serializeEvent("cancelled", "id-1", undefined, { mcpId: "m", payloadBytesMax: 1000, redact: null });
  assert.deepEqual(Object.keys(JSON.parse(bare.body)), ["action", "interaction_id", "mcp_id", "timestamp", "event_id"]);
});
