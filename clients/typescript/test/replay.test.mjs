// Reading the log back through the REAL server: events and the gap lines a cut leaves, as typed
// items.

import assert from "node:assert/strict";
import { appendFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { McpLogClient, parseReplayLine, replay, ReplayError } from "../dist/index.js";
import { ADMIN_KEY, captureLogger, MCP_ID, startServer, WRITER_KEY } from "./helpers/server.mjs";

// The fewest bytes a stored frame takes (the server's storage-format.md, "Cuts at start-up").
const FRAME_BYTES_MIN = 34;

async function post(url, id) {
  const res = await fetch(`${url}/api/v2/interactions`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ action: "interaction_start", interaction_id: id, mcp_id: MCP_ID, timestamp: 1e9 }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).seq;
}

async function collect(iterable) {
  const items = [];
  for await (const item of iterable) items.push(item);
  return items;
}

test("replay yields events, the gap a cut left, then new events", async () => {
  let server = await startServer();
  const dir = server.dir;
  try {
    for (let i = 0; i < 5; i++) assert.equal(await post(server.url, `replay-${i}`), i + 1);
    await server.stop({ keep: true });
    // Bytes that do not check out at the end of the last segment: the next start cuts them, and
    // numbering goes on past every seq they may have held.
    const segments = (await readdir(join(dir, "data", "segments"))).filter((n) => n.endsWith(".seg")).sort();
    const garbage = Buffer.from(Array.from({ length: 340 }, (_, i) => (i * 37 + 11) % 251));
    await appendFile(join(dir, "data", "segments", segments.at(-1)), garbage);
    server = await startServer({ dir });
    const nextSeq = 6 + Math.floor(garbage.length / FRAME_BYTES_MIN);
    assert.equal(await post(server.url, "after-cut"), nextSeq);

    const items = await collect(replay({ url: server.url, apiKey: ADMIN_KEY }));
    assert.deepEqual(
      items.map((i) => i.kind),
      ["event", "event", "event", "event", "event", "gap", "event"],
    );
    assert.deepEqual(items[5], { kind: "gap", afterSeq: 5, nextSeq, reason: "cut" });
    assert.deepEqual(
      items.filter((i) => i.kind === "event").map((i) => i.seq),
      [1, 2, 3, 4, 5, nextSeq],
    );
    assert.equal(items[6].event.interaction_id, "after-cut");

    // Following from inside the gap: the gap from the cursor on, then the event; aborting ends it.
    const abort = new AbortController();
    const followed = [];
    for await (const item of replay({ url: server.url, apiKey: ADMIN_KEY, afterSeq: 7, follow: true, signal: abort.signal })) {
      followed.push(item);
      if (followed.length === 2) abort.abort();
    }
    assert.deepEqual(followed[0], { kind: "gap", afterSeq: 7, nextSeq, reason: "cut" });
    assert.equal(followed[1].seq, nextSeq);

    // The client of a writer key replays its own mcp_id, gap lines included.
    const client = new McpLogClient({ url: server.url, apiKey: WRITER_KEY, mcpId: MCP_ID, flushOnExit: false, logger: captureLogger() });
    const mine = await collect(client.replay({ afterSeq: 4 }));
    assert.deepEqual(
      mine.map((i) => i.kind),
      ["event", "gap", "event"],
    );
    await client.close(1000);
    const limited = await collect(replay({ url: server.url, apiKey: ADMIN_KEY, limit: 2 }));
    assert.deepEqual(
      limited.map((i) => i.seq),
      [1, 2],
    );
  } finally {
    await server.stop();
  }
});

test("an error answer is a ReplayError; lines parse into typed items", async () => {
  const server = await startServer();
  try {
    await assert.rejects(collect(replay({ url: server.url, apiKey: "not-a-key" })), (err) => err instanceof ReplayError && err.status === 401);
  } finally {
    await server.stop();
  }
  assert.deepEqual(parseReplayLine('{"gap":{"after_seq":89,"next_seq":101,"reason":"repair"}}'), {
    kind: "gap",
    afterSeq: 89,
    nextSeq: 101,
    reason: "repair",
  });
  assert.deepEqual(parseReplayLine('{"heartbeat":1795759503.5,"durable_seq":3}'), { kind: "heartbeat", at: 1795759503.5, durableSeq: 3 });
  assert.equal(parseReplayLine('{"something_new":1}'), null);
  assert.throws(
    () => parseReplayLine('{"error":{"code":"shutting_down","message":"m","after_seq":7}}'),
    (err) => err instanceof ReplayError && err.code === "shutting_down" && err.afterSeq === 7,
  );
});
