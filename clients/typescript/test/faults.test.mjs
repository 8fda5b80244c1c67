// Faults: server down then up, 503 + Retry-After, a connection killed after the server stored
// the batch, a full queue, a redirect, an oversized answer, a bug inside the worker. Nothing may
// be lost or stored (or counted) twice.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { McpLogClient, uuidv7 } from "../dist/index.js";
import { serializeEvent } from "../dist/events.js";
import { RESPONSE_BYTES_MAX } from "../dist/http.js";
import { EventQueue } from "../dist/queue.js";
import { Worker } from "../dist/worker.js";
import { captureLogger, freePort, MCP_ID, sleep, startProxy, startServer, waitFor, WRITER_KEY } from "./helpers/server.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

const fastRetry = { backoffBaseMs: 50, backoffMaxMs: 300, requestTimeoutMs: 3000, flushOnExit: false };

/** Emits `n` interactions of start+complete; returns their ids. */
function emitInteractions(client, prefix, n) {
  const ids = [];
  for (let i = 0; i < n; i++) {
    const id = `${prefix}-${i}`;
    ids.push(id);
    assert.equal(client.emit("start", id, { request_data: { i } }), true);
    assert.equal(client.emit("complete", id, { result_data: { i } }), true);
  }
  return ids;
}

/** Each interaction holds exactly 2 events, and the replay holds each of our event_ids exactly once. */
async function assertStoredOnce(base, ids) {
  for (const id of ids) {
    const rec = await waitFor(async () => {
      const r = await base.interaction(id);
      return r?.status === "completed" && r;
    }, 5000, `${id} completed`);
    assert.equal(rec.metadata.event_count, 2, `${id} event_count`);
  }
  const replay = await base.replay();
  const ours = replay.filter((e) => ids.includes(e.event.interaction_id));
  assert.equal(ours.length, ids.length * 2);
  const eventIds = ours.map((e) => e.event.event_id);
  assert.equal(new Set(eventIds).size, eventIds.length, "each event_id once in the replay");
}

test("(a) server down at first, started later on that port: delivered after backoff", async () => {
  const port = await freePort();
  const logger = captureLogger();
  const client = new McpLogClient({ url: `http://127.0.0.1:${port}`, apiKey: WRITER_KEY, mcpId: MCP_ID, logger, ...fastRetry });
  const ids = emitInteractions(client, `down-${uuidv7()}`, 3);
  await sleep(800);
  const early = client.stats();
  assert.equal(early.delivered, 0);
  assert.equal(early.pending, 6);
  assert.ok(logger.lines.some((l) => l.includes("retrying")), "a retry warning");

  const late = await startServer({ port });
  try {
    const r = await client.flush(10_000);
    assert.equal(r.delivered, 6);
    assert.equal(r.pending, 0);
    await assertStoredOnce(late, ids);
  } finally {
    await client.close(1000);
    await late.stop();
  }
});

test("(b) 503 with Retry-After: 1 is retried after at least 1 s, everything stored once", async () => {
  const proxy = await startProxy(server.url, async ({ n, res, forward, reply }) => {
    if (n === 1) {
      res.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
      res.end(JSON.stringify({ error: { code: "queue_full", message: "busy", field: null } }));
      return;
    }
    reply(await forward());
  });
  const client = new McpLogClient({ url: proxy.url, apiKey: WRITER_KEY, mcpId: MCP_ID, logger: captureLogger(), ...fastRetry });
  try {
    const ids = emitInteractions(client, `r503-${uuidv7()}`, 3);
    const r = await client.flush(10_000);
    assert.equal(r.delivered, 6);
    assert.equal(r.pending, 0);
    assert.equal(proxy.requests.length, 2);
    const gap = proxy.requests[1].at - proxy.requests[0].at;
    assert.ok(gap >= 950, `retried after ${gap} ms, Retry-After said 1 s`);
    assert.equal(proxy.requests[1].body, proxy.requests[0].body, "the retry resends byte-identical events");
    await assertStoredOnce(server, ids);
  } finally {
    await client.close(1000);
    await proxy.close();
  }
});

test("(c) connection killed after the server stored the batch: retried, nothing lost or duplicated", async () => {
  const proxy = await startProxy(server.url, async ({ n, res, forward, reply }) => {
    const answer = await forward(); // the real server stores the batch...
    if (n === 1) {
      res.socket.destroy(); // ...and the client never hears about it
      return;
    }
    reply(answer);
  });
  const client = new McpLogClient({ url: proxy.url, apiKey: WRITER_KEY, mcpId: MCP_ID, logger: captureLogger(), ...fastRetry });
  try {
    const ids = emitInteractions(client, `kill-${uuidv7()}`, 5);
    const r = await client.flush(10_000);
    assert.equal(r.delivered, 10, "duplicates of stored events count as delivered");
    assert.equal(r.rejected, 0);
    assert.equal(r.pending, 0);
    assert.equal(proxy.requests.length, 2);
    assert.equal(proxy.requests[1].body, proxy.requests[0].body);
    await assertStoredOnce(server, ids);
  } finally {
    await client.close(1000);
    await proxy.close();
  }
});

test("(d) full queue with the server unreachable: drops counted, one warning, emit returns at once", async () => {
  const port = await freePort(); // nothing listens there
  const logger = captureLogger();
  const client = new McpLogClient({
    url: `http://127.0.0.1:${port}`,
    apiKey: WRITER_KEY,
    mcpId: MCP_ID,
    logger,
    queueMaxEvents: 5,
    lingerMs: 1000,
    ...fastRetry,
  });
  const results = [];
  let slowest = 0;
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now();
    results.push(client.emit("start", `full-${i}`, { request_data: { i } }));
    slowest = Math.max(slowest, performance.now() - t0);
  }
  assert.ok(slowest < 20, `slowest emit took ${slowest} ms`);
  assert.deepEqual(results.slice(0, 5), [true, true, true, true, true]);
  assert.ok(results.slice(5).every((x) => x === false));
  const s = client.stats();
  assert.equal(s.dropped, 45);
  assert.equal(s.pending, 5);
  const warnings = logger.lines.filter((l) => l.includes("queue full"));
  assert.equal(warnings.length, 1, "the warning is rate-limited, not one per event");
  assert.match(warnings[0], /queueMaxEvents=5/);

  const t0 = Date.now();
  const r = await client.close(300);
  assert.ok(Date.now() - t0 < 2000, "close() returns within its timeout");
  assert.equal(r.pending, 5);
  assert.equal(r.dropped, 45);
});

test("(d2) the byte limit of the queue applies too", () => {
  const client = new McpLogClient({
    url: "http://127.0.0.1:9",
    apiKey: WRITER_KEY,
    mcpId: MCP_ID,
    logger: captureLogger(),
    queueMaxBytes: 4096,
    lingerMs: 1000,
    ...fastRetry,
  });
  let queued = 0;
  for (let i = 0; i < 20; i++) if (client.emit("start", `b-${i}`, { request_data: { pad: "y".repeat(1000) } })) queued++;
  assert.ok(queued >= 3 && queued <= 4, `${queued} queued`);
  assert.equal(client.stats().dropped, 20 - queued);
  return client.close(0);
});

test("(e) a 3xx is not followed and an oversized answer is not buffered: both retried, stored once", async () => {
  const proxy = await startProxy(server.url, async ({ n, res, forward, reply }) => {
    if (n === 1) {
      // Followed, this would become a GET to another path and the batch would be lost.
      res.writeHead(307, { location: "/elsewhere" });
      res.end();
      return;
    }
    if (n === 2) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(Buffer.alloc(RESPONSE_BYTES_MAX + 1024, 0x20));
      return;
    }
    reply(await forward());
  });
  const logger = captureLogger();
  const client = new McpLogClient({ url: proxy.url, apiKey: WRITER_KEY, mcpId: MCP_ID, logger, ...fastRetry, warnIntervalMs: 0 });
  try {
    const ids = emitInteractions(client, `redir-${uuidv7()}`, 3);
    const r = await client.flush(10_000);
    assert.equal(r.delivered, 6);
    assert.equal(r.pending, 0);
    assert.deepEqual(proxy.requests.map((q) => q.path), Array(3).fill("/api/v2/interactions/batch?partial=true"));
    assert.equal(proxy.requests[2].body, proxy.requests[0].body);
    assert.ok(logger.lines.some((l) => l.includes("HTTP 307")), "the 3xx is reported as retried");
    assert.ok(logger.lines.some((l) => l.includes(`larger than ${RESPONSE_BYTES_MAX} bytes`)), "the oversized answer is reported");
    await assertStoredOnce(server, ids);
  } finally {
    await client.close(1000);
    await proxy.close();
  }
});

test("(f) after an unexpected error in the worker, only the events not yet settled are sent again", async () => {
  // Answers every batch like the server in partial mode: its first event stored, the others refused.
  const proxy = await startProxy(server.url, async ({ body, res }) => {
    const sent = JSON.parse(body.toString("utf8"));
    const results = sent.map((_, index) =>
      index === 0
        ? { index, status: "stored", seq: 1 }
        : { index, status: "error", http_status: 422, error: { code: "blank_id", message: "m", field: "interaction_id" } },
    );
    res.writeHead(207, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: "partial", results }));
  });
  const queue = new EventQueue(100, 1 << 20);
  for (let i = 0; i < 3; i++) {
    queue.push(serializeEvent("start", `bug-${i}`, { request_data: { i } }, { mcpId: MCP_ID, payloadBytesMax: 1000, redact: null }));
  }
  const counters = { delivered: 0, rejected: 0, dropped: 0 };
  // A bug in the reporting path: the first rejection warning throws, midway through settling
  // the batch (event 0 delivered, event 1 rejected, event 2 not yet looked at).
  const kinds = [];
  const warner = {
    warn(kind) {
      kinds.push(kind);
      if (kind === "rejected" && kinds.filter((k) => k === "rejected").length === 1) throw new Error("bug while reporting");
    },
    now() {},
  };
  const rejectedCalls = [];
  const worker = new Worker(
    queue,
    counters,
    { baseUrl: proxy.url, apiKey: WRITER_KEY, batchMaxEvents: 500, batchMaxBytes: 1 << 20, lingerMs: 0, requestTimeoutMs: 3000, backoffBaseMs: 20, backoffMaxMs: 20 },
    warner,
    (r) => rejectedCalls.push(r.event.interaction_id),
  );
  try {
    await worker.waitSettled(3, 5000);
    assert.ok(kinds.includes("worker_error"), "the error was warned about");
    assert.deepEqual(worker.snapshot(), { delivered: 2, rejected: 1, dropped: 0, pending: 0 });
    assert.equal(proxy.requests.length, 2);
    assert.deepEqual(JSON.parse(proxy.requests[1].body).map((e) => e.interaction_id), ["bug-2"], "only the unsettled event is resent");
    assert.deepEqual(rejectedCalls, [], "onRejected is never called twice (here: the bug preempted its one call)");
  } finally {
    await worker.stop();
    await proxy.close();
  }
});
