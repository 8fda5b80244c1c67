// Exit: a process that ends its event loop with events pending is kept alive just long enough
// to deliver them (beforeExit), and never longer than exitFlushTimeoutMs.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { uuidv7 } from "../dist/index.js";
import { freePort, MCP_ID, startServer, waitFor, WRITER_KEY } from "./helpers/server.mjs";

const CHILD = fileURLToPath(new URL("./fixtures/exit-child.mjs", import.meta.url));

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

async function runChild(env) {
  const t0 = Date.now();
  const child = spawn(process.execPath, [CHILD], {
    env: { ...process.env, MCPLOG_KEY: WRITER_KEY, MCPLOG_MCP_ID: MCP_ID, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c) => (stdout += c));
  child.stderr.on("data", (c) => (stderr += c));
  const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const [code] = await once(child, "exit");
  clearTimeout(killer);
  return { code, stdout, stderr, ms: Date.now() - t0 };
}

test("(e1) events pending when the event loop ends are delivered before the process exits", async () => {
  const prefix = `exit-${uuidv7()}`;
  const n = 25;
  const r = await runChild({ MCPLOG_URL: server.url, COUNT: String(n), PREFIX: prefix });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /emitted 25/);
  assert.doesNotMatch(r.stderr, /pending/);
  assert.ok(r.ms < 5000, `child took ${r.ms} ms`);
  const replay = await server.replay();
  const ours = replay.filter((e) => e.event.interaction_id.startsWith(prefix));
  assert.equal(ours.length, n);
  const rec = await waitFor(() => server.interaction(`${prefix}-${n - 1}`), 5000, "last record");
  assert.deepEqual(rec.request_data, { i: n - 1 });
});

test("(e2) server unreachable: the process exits after exitFlushTimeoutMs and reports what is pending", async () => {
  const port = await freePort();
  const r = await runChild({ MCPLOG_URL: `http://127.0.0.1:${port}`, COUNT: "7", PREFIX: "lost", EXIT_FLUSH_MS: "1000" });
  assert.equal(r.code, 0, r.stderr);
  // ~1 s of flushing plus Node's start-up; it must not wait for backoff or a request timeout.
  assert.ok(r.ms >= 1000, `exited after ${r.ms} ms, before the flush time limit`);
  assert.ok(r.ms < 3500, `exited after ${r.ms} ms`);
  assert.match(r.stderr, /mcplog: exit: 7 events still pending/);
});

test("(e3) a request in flight to a server that never answers does not hold the exit past exitFlushTimeoutMs", async () => {
  // Accepts connections and reads requests, never answers: the client's request stays in flight.
  const sockets = new Set();
  let requests = 0;
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("data", () => requests++);
    socket.on("data", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  silent.listen(0, "127.0.0.1");
  await once(silent, "listening");
  try {
    const r = await runChild({
      MCPLOG_URL: `http://127.0.0.1:${silent.address().port}`,
      COUNT: "4",
      PREFIX: "silent",
      EXIT_FLUSH_MS: "1000",
      REQUEST_TIMEOUT_MS: "10000",
      // Busy long enough for the first request to be sent (lingerMs is 50): it is in flight when
      // the loop ends, and must not keep the process up until requestTimeoutMs.
      WORK_MS: "300",
    });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(requests >= 1, "a request was sent (and left unanswered)");
    assert.ok(r.ms < 3000, `exited after ${r.ms} ms (exitFlushTimeoutMs=1000, requestTimeoutMs=10000)`);
    assert.match(r.stderr, /mcplog: exit: 4 events still pending after exitFlushTimeoutMs=1000 ms/);
  } finally {
    for (const s of sockets) s.destroy();
    silent.close();
  }
});
