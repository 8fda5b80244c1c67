// Client basics against the real server: lifecycle, per-event rejection, redaction, bad input.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { McpLogClient, REDACTED, uuidv7 } from "../dist/index.js";
import { captureLogger, MCP_ID, startServer, waitFor, WRITER_KEY } from "./helpers/server.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

function newClient(extra = {}) {
  return new McpLogClient({ url: server.url, apiKey: WRITER_KEY, mcpId: MCP_ID, flushOnExit: false, logger: captureLogger(), ...extra });
}

test("start, progress, complete: the record is completed with the payloads", async () => {
  const client = newClient();
  const id = `basic-${uuidv7()}`;
  assert.equal(client.emit("start", id, { request_data: { tool: "search", arguments: { q: "ünïcode ✓" } } }), true);
  assert.equal(client.emit("interaction_progress", id, { progress_data: { progress: 1, total: 2 } }), true);
  assert.equal(client.emit("complete", id, { result_data: { hits: [1, 2, 3] } }), true);
  const r = await client.flush(5000);
  assert.deepEqual(r, { delivered: 3, rejected: 0, dropped: 0, pending: 0 });

  const rec = await waitFor(async () => {
    const x = await server.interaction(id);
    return x?.status === "completed" && x;
  }, 5000, "completed record");
  assert.equal(rec.mcp_id, MCP_ID);
  assert.deepEqual(rec.request_data, { tool: "search", arguments: { q: "ünïcode ✓" } });
  assert.deepEqual(rec.result_data, { hits: [1, 2, 3] });
  assert.equal(rec.progress_updates.length, 1);
  assert.deepEqual(rec.progress_updates[0].data, { progress: 1, total: 2 });
  assert.equal(rec.metadata.event_count, 3);

  // Each event carries a UUIDv7 event_id and a float timestamp stamped at emit time.
  const { events } = await server.events(id);
  for (const e of events) {
    assert.match(e.event.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(Math.abs(e.event.timestamp - Date.now() / 1000) < 60);
  }
  await client.close(1000);
});

test("given event_id and timestamp are kept; an error event is stored as failed", async () => {
  const client = newClient();
  const id = `given-${uuidv7()}`;
  client.emit("start", id, { event_id: `${id}-e1`, timestamp: 1_700_000_000.5, request_data: { tool: "t" } });
  client.emit("error", id, { event_id: `${id}-e2`, error_data: { message: "boom", type: "ValueError" } });
  await client.flush(5000);
  const rec = await waitFor(async () => (await server.interaction(id))?.status === "failed" && server.interaction(id), 5000, "failed record");
  assert.deepEqual(rec.error_data, { message: "boom", type: "ValueError" });
  const { events } = await server.events(id);
  assert.deepEqual(events.map((e) => e.event.event_id), [`${id}-e1`, `${id}-e2`]);
  assert.equal(events[0].event.timestamp, 1_700_000_000.5);
  await client.close(1000);
});

test("per-event rejection (partial mode): onRejected reports the bad events, the rest of the batch is stored", async () => {
  const rejections = [];
  const logger = captureLogger();
  const client = newClient({ logger, onRejected: (r) => rejections.push(r), lingerMs: 200 });
  const good = `good-${uuidv7()}`;
  // One batch (the linger collects them): valid events around two the server refuses for
  // different reasons: an id with surrounding whitespace (422) and a foreign mcp_id (403).
  client.emit("start", good, { request_data: { tool: "a" } });
  client.emit("start", ` ${good}-padded`, { request_data: {} });
  client.emit("start", `${good}-foreign`, { mcp_id: "someone_else", request_data: {} });
  client.emit("complete", good, { result_data: { ok: true } });
  const r = await client.flush(5000);
  assert.equal(r.delivered, 2);
  assert.equal(r.rejected, 2);
  assert.equal(r.pending, 0);

  assert.equal(rejections.length, 2);
  const byId = Object.fromEntries(rejections.map((x) => [x.event.interaction_id, x]));
  assert.equal(byId[` ${good}-padded`].httpStatus, 422);
  assert.equal(byId[` ${good}-padded`].field, "interaction_id");
  assert.equal(byId[`${good}-foreign`].httpStatus, 403);
  for (const x of rejections) {
    assert.equal(typeof x.code, "string");
    assert.equal(typeof x.message, "string");
  }
  // The valid events of the same batch were stored.
  const rec = await waitFor(async () => (await server.interaction(good))?.status === "completed" && server.interaction(good), 5000, "good record");
  assert.equal(rec.metadata.event_count, 2);
  assert.ok(logger.lines.some((l) => l.includes("rejected")), "a warning names the rejection");
  // The client used ?partial=true (no fallback to all-or-nothing for an older server).
  assert.ok(!logger.lines.some((l) => l.includes("does not support ?partial=true")), `server lacks partial mode: ${logger.lines.join("\n")}`);
  await client.close(1000);
});

test("redaction: a password never reaches the server, at any depth", async () => {
  const client = newClient({ redact: ["password", "api_token"] });
  const id = `redact-${uuidv7()}`;
  const args = {
    user: "ada",
    password: "hunter2-top",
    nested: { Password: "hunter3-nested", list: [{ api_token: "tok-in-list", keep: 1 }] },
  };
  client.emit("start", id, { request_data: { tool: "login", arguments: args } });
  client.emit("error", id, { error_data: { message: "bad login", password: "hunter4-err" } });
  await client.flush(5000);
  assert.equal(args.password, "hunter2-top", "the caller's object is not modified");

  const { events } = await waitFor(async () => {
    const e = await server.events(id);
    return e?.events.length === 2 && e;
  }, 5000, "2 events");
  const raw = JSON.stringify(events);
  for (const secret of ["hunter2-top", "hunter3-nested", "tok-in-list", "hunter4-err"]) assert.ok(!raw.includes(secret), `${secret} leaked`);
  const req = events[0].event.request_data;
  assert.equal(req.arguments.password, REDACTED);
  assert.equal(req.arguments.nested.Password, REDACTED);
  assert.equal(req.arguments.nested.list[0].api_token, REDACTED);
  assert.equal(req.arguments.nested.list[0].keep, 1);
  assert.equal(req.arguments.user, "ada");
  assert.equal(events[1].event.error_data.password, REDACTED);
  await client.close(1000);
});

test("emit never throws on bad input; invalid calls are counted as rejected and warned", async () => {
  const logger = captureLogger();
  const rejections = [];
  const client = newClient({ logger, onRejected: (r) => rejections.push(r) });
  const circular = { a: 1 };
  circular.self = circular;
  const hostile = {};
  Object.defineProperty(hostile, "request_data", { enumerable: true, get: () => { throw new Error("getter"); } });
  const bad = [
    () => client.emit(),
    () => client.emit("launch", "x"),
    () => client.emit(Symbol("start"), "x"),
    () => client.emit("start", 42),
    () => client.emit("start", ""),
    () => client.emit("start", "x", "not an object"),
    () => client.emit("start", "x", { request_data: [1, 2] }),
    () => client.emit("start", "x", { request_data: "text" }),
    () => client.emit("start", "x", { result_data: {} }), // payload field of another action
    () => client.emit("start", "x", { bogus: 1 }),
    () => client.emit("start", "x", { timestamp: "now" }),
    () => client.emit("start", "x", { timestamp: Infinity }),
    () => client.emit("start", "x", { event_id: 7 }),
    () => client.emit("start", "x", { request_data: circular }),
    () => client.emit("start", "x", { request_data: { n: 10n } }),
    () => client.emit("start", "x", { request_data: new Date() }),
    () => client.emit("start", "x", hostile),
  ];
  for (const call of bad) {
    let ret;
    assert.doesNotThrow(() => {
      ret = call();
    });
    assert.equal(ret, false);
  }
  const r = await client.flush(2000);
  assert.equal(r.delivered, 0);
  assert.equal(r.rejected + r.dropped, bad.length);
  assert.equal(r.pending, 0);
  assert.ok(rejections.length >= bad.length - 1);
  assert.ok(rejections.every((x) => x.code === "invalid_event" && x.httpStatus === 0));
  assert.ok(logger.lines.some((l) => l.includes("invalid emit()")));
  // Rate-limited: far fewer warning lines than bad calls.
  assert.ok(logger.lines.length < bad.length, `${logger.lines.length} warnings`);
  // A throwing onRejected callback does not break emit either.
  const c2 = newClient({ onRejected: () => { throw new Error("callback bug"); } });
  assert.equal(c2.emit("nope", "x"), false);
  await Promise.all([client.close(500), c2.close(500)]);
});

test("an oversized payload is replaced by a truncation marker instead of being refused", async () => {
  const client = newClient({ payloadBytesMax: 1024 });
  const id = `big-${uuidv7()}`;
  client.emit("start", id, { request_data: { blob: "x".repeat(5000) } });
  const r = await client.flush(5000);
  assert.equal(r.delivered, 1);
  const rec = await waitFor(() => server.interaction(id), 5000, "record");
  assert.equal(rec.request_data.truncated, true);
  assert.ok(rec.request_data.bytes > 5000);
  await client.close(1000);
});

test("close(): flushes, then later emits are dropped and counted", async () => {
  const client = newClient();
  const id = `close-${uuidv7()}`;
  client.emit("start", id, { request_data: {} });
  const r = await client.close(5000);
  assert.equal(r.delivered, 1);
  assert.equal(r.pending, 0);
  assert.equal(client.emit("complete", id), false);
  assert.equal(client.stats().dropped, 1);
  assert.deepEqual(await client.close(), r, "close() again returns the same result");
});

test("many events go out in batches and all arrive", async () => {
  const client = newClient({ batchMaxEvents: 50 });
  const prefix = `bulk-${uuidv7()}`;
  for (let i = 0; i < 300; i++) client.emit("start", `${prefix}-${i}`, { request_data: { i } });
  const r = await client.flush(10_000);
  assert.equal(r.delivered, 300);
  assert.equal(r.pending, 0);
  const rec = await waitFor(() => server.interaction(`${prefix}-299`), 5000, "last record");
  assert.deepEqual(rec.request_data, { i: 299 });
  await client.close(1000);
});

test("options are checked at construction", () => {
  assert.throws(() => new McpLogClient({ apiKey: "k", mcpId: "m" }), TypeError);
  assert.throws(() => new McpLogClient({ url: "ftp://x", apiKey: "k", mcpId: "m" }), TypeError);
  assert.throws(() => new McpLogClient({ url: server.url, apiKey: "k", mcpId: "m", batchMaxEvents: 5000 }), TypeError);
  assert.throws(() => new McpLogClient({ url: server.url, apiKey: "k", mcpId: "m", lingerMs: -1 }), TypeError);
  // A backoff of 0 would retry in a tight loop.
  assert.throws(() => new McpLogClient({ url: server.url, apiKey: "k", mcpId: "m", backoffBaseMs: 0 }), /backoffBaseMs/);
  assert.throws(() => new McpLogClient({ url: server.url, apiKey: "k", mcpId: "m", backoffMaxMs: 0 }), /backoffMaxMs/);
  // A string is iterable letter by letter: it would redact "p", "a", ... and not "password".
  assert.throws(() => new McpLogClient({ url: server.url, apiKey: "k", mcpId: "m", redact: "password" }), /redact/);
  assert.throws(() => new McpLogClient({ url: server.url, apiKey: "k", mcpId: "m", redact: 42 }), /redact/);
  const ok = new McpLogClient({ url: server.url, apiKey: "k", mcpId: "m", flushOnExit: false, redact: new Set(["password"]) });
  return ok.close(0);
});
