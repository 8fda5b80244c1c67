// Test helpers: start the REAL mcplog server binary ($MCPLOG_BIN) on a port of its own with a
// temporary data dir and static keys; read its stored state over its HTTP API; put a small
// programmable proxy in front of it for fault tests.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const WRITER_KEY = "test-writer-key-0123456789abcdef";
export const ADMIN_KEY = "test-admin-key-0123456789abcdef";
export const MCP_ID = "demo_mcp";

const CONFIG = `[static_api_keys]
"${WRITER_KEY}" = { mcp_id = "${MCP_ID}", role = "writer" }
"${ADMIN_KEY}" = { role = "admin" }

# The server's own redaction would rewrite the client's markers; these tests check what the
# client sends, so the server stores it as sent.
[redaction]
enabled = false
`;

/** Fails (not skips) when the binary is not given: a silently skipped suite proves nothing. */
export function serverBinary() {
  const bin = process.env.MCPLOG_BIN;
  if (!bin) throw new Error("MCPLOG_BIN is not set: point it at the mcplog server binary (e.g. /tmp/mcplog-bin/mcplog)");
  return bin;
}

/** A port that was free a moment ago (for "start the server later on this port" tests). */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/**
 * Starts the server; resolves once GET /readyz answers 200. `port` 0 lets the server pick one
 * (parsed from its "listening on" log line).
 */
export async function startServer({ port = 0, dir: reuse = null } = {}) {
  const bin = serverBinary();
  // `dir`: start again on the data directory of a server stopped with `stop({ keep: true })`.
  const dir = reuse ?? (await mkdtemp(join(tmpdir(), "mcplog-ts-test-")));
  const config = join(dir, "mcplog.toml");
  await writeFile(config, CONFIG);
  await mkdir(join(dir, "data"), { recursive: true });
  const child = spawn(bin, ["serve", "--data-dir", join(dir, "data"), "--bind", `127.0.0.1:${port}`, "--config", config], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  const exited = once(child, "exit");
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mcplog did not report listening within 15 s:\n${log}`)), 15_000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      // Keep draining stderr for the server's whole life (a full pipe would block it), but keep only the tail.
      log = (log + chunk).slice(-20_000);
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exited.then(([code, signal]) => {
      clearTimeout(timer);
      reject(new Error(`mcplog exited early (code ${code}, signal ${signal}):\n${log}`));
    });
  });
  const actualPort = await listening;
  const url = `http://127.0.0.1:${actualPort}`;
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, 10_000, "readyz");

  let stopped = false;
  const server = {
    url,
    port: actualPort,
    dir,
    get log() {
      return log;
    },
    async stop({ keep = false } = {}) {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited.catch(() => {});
        clearTimeout(killer);
      }
      if (!keep) await rm(dir, { recursive: true, force: true });
    },
    interaction: (id) => getInteraction(url, id),
    events: (id) => getEvents(url, id),
    list: () => listInteractions(url),
    replay: () => replayEvents(url),
  };
  return server;
}

async function getJson(url, key = WRITER_KEY) {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

export const getInteraction = (base, id) => getJson(`${base}/api/v2/interactions/${encodeURIComponent(id)}`);
export const getEvents = (base, id) => getJson(`${base}/api/v2/interactions/${encodeURIComponent(id)}/events`);
export const listInteractions = (base) => getJson(`${base}/api/v2/interactions?mcp_id=${MCP_ID}&limit=100`);

/** Every stored event, in order (admin NDJSON replay). */
export async function replayEvents(base) {
  const res = await fetch(`${base}/api/v2/events`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  if (!res.ok) throw new Error(`replay: ${res.status} ${await res.text()}`);
  return (await res.text())
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

/** Polls `check` (every 25 ms) until it returns truthy; throws after timeoutMs. */
export async function waitFor(check, timeoutMs = 5_000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${lastErr.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * An HTTP proxy in front of `upstream`. For each request, `handle({ n, req, res, body, forward })`
 * decides: `forward()` sends the same request upstream and resolves with the upstream answer
 * `{ status, headers, body }`, which `reply(answer)` passes back; or it can answer by itself, or
 * destroy the socket. `requests` records { n, at (ms), path, body } for assertions.
 */
export async function startProxy(upstream, handle) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const n = requests.length + 1;
    requests.push({ n, at: Date.now(), path: req.url, body: body.toString("utf8") });
    const forward = async () => {
      const r = await fetch(upstream + req.url, {
        method: req.method,
        headers: { authorization: req.headers.authorization ?? "", "content-type": req.headers["content-type"] ?? "application/json" },
        body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
      });
      return { status: r.status, headers: Object.fromEntries(r.headers), body: await r.text() };
    };
    const reply = (a) => {
      res.writeHead(a.status, { "content-type": a.headers["content-type"] ?? "application/json" });
      res.end(a.body);
    };
    try {
      await handle({ n, req, res, body, forward, reply });
    } catch (err) {
      res.destroy(err);
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    async close() {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** A logger that keeps warnings for assertions. */
export function captureLogger() {
  const lines = [];
  const logger = (m) => lines.push(m);
  logger.lines = lines;
  return logger;
}
