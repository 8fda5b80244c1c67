// End to end with the real @modelcontextprotocol/sdk: an instrumented McpServer, an SDK Client
// over InMemoryTransport, four tool calls (complete, throw, progress, cancel) → exactly four
// interactions in mcplog with the right statuses and payloads.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { CallToolRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { instrument, McpLogClient } from "../dist/index.js";
import { captureLogger, MCP_ID, startServer, waitFor, WRITER_KEY } from "./helpers/server.mjs";

let mcplog;
before(async () => {
  mcplog = await startServer();
});
after(async () => {
  await mcplog?.stop();
});

function buildServer() {
  const server = new McpServer({ name: "demo", version: "1.0.0" });
  let markCancelStarted;
  const cancelStarted = new Promise((r) => (markCancelStarted = r));

  server.registerTool("add", { inputSchema: { a: z.number(), b: z.number() } }, async ({ a, b }) => ({
    content: [{ type: "text", text: String(a + b) }],
  }));
  server.registerTool("explode", { inputSchema: { why: z.string() } }, async ({ why }) => {
    throw new Error(`boom: ${why}`);
  });
  server.registerTool("count", { inputSchema: { steps: z.number() } }, async ({ steps }, extra) => {
    const token = extra._meta?.progressToken;
    for (let i = 1; i <= steps; i++) {
      if (token !== undefined) {
        await extra.sendNotification({
          method: "notifications/progress",
          params: { progressToken: token, progress: i, total: steps, message: `step ${i}` },
        });
      }
    }
    return { content: [{ type: "text", text: `counted to ${steps}` }] };
  });
  server.registerTool("wait_forever", { inputSchema: {} }, async (_args, extra) => {
    markCancelStarted();
    // Until the client cancels (the SDK aborts extra.signal on notifications/cancelled).
    await new Promise((resolve) => {
      if (extra.signal.aborted) return resolve();
      extra.signal.addEventListener("abort", resolve, { once: true });
      setTimeout(resolve, 10_000).unref();
    });
    return { content: [{ type: "text", text: "too late" }] };
  });
  return { server, cancelStarted };
}

test("instrumented McpServer: complete, error, progress, cancelled → 4 interactions", async () => {
  const client = new McpLogClient({ url: mcplog.url, apiKey: WRITER_KEY, mcpId: MCP_ID, flushOnExit: false, logger: captureLogger() });
  const { server, cancelStarted } = buildServer();
  instrument(server, { client }); // the one line

  const [clientTransport, serverTransport] = InMemoryTransport.createLinkedPair();
  await server.connect(serverTransport);
  const mcp = new Client({ name: "test-client", version: "1.0.0" });
  await mcp.connect(clientTransport);

  const added = await mcp.callTool({ name: "add", arguments: { a: 2, b: 3 } });
  assert.equal(added.content[0].text, "5");

  const exploded = await mcp.callTool({ name: "explode", arguments: { why: "disk on fire" } });
  assert.equal(exploded.isError, true);

  const progress = [];
  const counted = await mcp.callTool({ name: "count", arguments: { steps: 3 } }, undefined, { onprogress: (p) => progress.push(p) });
  assert.equal(counted.content[0].text, "counted to 3");
  assert.equal(progress.length, 3);

  const ac = new AbortController();
  const pending = mcp.callTool({ name: "wait_forever", arguments: {} }, undefined, { signal: ac.signal });
  await cancelStarted;
  ac.abort("user gave up");
  await assert.rejects(pending);

  const r = await client.flush(5000);
  assert.equal(r.rejected, 0);
  assert.equal(r.pending, 0);

  const { interactions } = await waitFor(async () => {
    const l = await mcplog.list();
    return l.interactions.length === 4 && l.interactions.every((i) => i.status !== "started" && i.status !== "in_progress") && l;
  }, 5000, "4 finished interactions");
  const byTool = Object.fromEntries(interactions.map((i) => [i.request_data.tool, i]));
  assert.deepEqual(Object.keys(byTool).sort(), ["add", "count", "explode", "wait_forever"]);

  const add = byTool.add;
  assert.equal(add.status, "completed");
  assert.deepEqual(add.request_data, { tool: "add", arguments: { a: 2, b: 3 } });
  assert.deepEqual(add.result_data, { content: [{ type: "text", text: "5" }] });
  assert.equal(add.metadata.event_count, 2);

  const explode = byTool.explode;
  assert.equal(explode.status, "failed");
  assert.deepEqual(explode.request_data.arguments, { why: "disk on fire" });
  assert.match(explode.error_data.message, /boom: disk on fire/);
  assert.equal(explode.error_data.type, "tool_error");

  const count = byTool.count;
  assert.equal(count.status, "completed");
  assert.equal(count.progress_updates.length, 3);
  assert.deepEqual(count.progress_updates.map((p) => p.data), [1, 2, 3].map((i) => ({ progress: i, total: 3, message: `step ${i}` })));
  assert.deepEqual(count.result_data, { content: [{ type: "text", text: "counted to 3" }] });

  const cancelled = byTool.wait_forever;
  assert.equal(cancelled.status, "cancelled");
  assert.match(cancelled.cancel_data.reason, /user gave up/);
  // Exactly one terminal event: start + cancelled, nothing after the cancel.
  assert.equal(cancelled.metadata.event_count, 2);

  // The interaction id is a fresh UUIDv7 per call, not the JSON-RPC id.
  for (const i of interactions) assert.match(i.interaction_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7/);

  await mcp.close();
  await server.close();
  await client.close(1000);
});

test("every transport the server connects is tapped; JSON-RPC ids repeat, interaction ids do not; options", async () => {
  const client = new McpLogClient({ url: mcplog.url, apiKey: WRITER_KEY, mcpId: MCP_ID, flushOnExit: false, logger: captureLogger() });
  const { server } = buildServer();
  instrument(server, { client, captureArguments: false, captureResults: false });
  const before = new Set((await mcplog.list()).interactions.map((i) => i.interaction_id));

  // Two sessions one after the other (as Streamable HTTP connects one transport per session).
  for (let session = 0; session < 2; session++) {
    const [ct, st] = InMemoryTransport.createLinkedPair();
    await server.connect(st);
    const mcp = new Client({ name: "c", version: "1" });
    await mcp.connect(ct);
    await mcp.callTool({ name: "add", arguments: { a: session, b: 1 } });
    await mcp.close();
    await server.close();
  }

  // A transport instrumented directly, and a server already connected, work too.
  const { server: s2 } = buildServer();
  const [ct2, st2] = InMemoryTransport.createLinkedPair();
  await s2.connect(st2);
  instrument(s2, { client, captureArguments: false, captureResults: false });
  const mcp2 = new Client({ name: "c", version: "1" });
  await mcp2.connect(ct2);
  await mcp2.callTool({ name: "add", arguments: { a: 9, b: 9 } });
  await mcp2.close();

  await client.flush(5000);
  const fresh = await waitFor(async () => {
    const l = (await mcplog.list()).interactions.filter((i) => !before.has(i.interaction_id));
    return l.length === 3 && l.every((i) => i.status === "completed") && l;
  }, 5000, "3 new completed interactions");
  assert.equal(new Set(fresh.map((i) => i.interaction_id)).size, 3);
  for (const i of fresh) {
    assert.deepEqual(i.request_data, { tool: "add" }, "arguments not captured");
    assert.deepEqual(i.result_data, {}, "result not captured");
  }
  await client.close(1000);
});

test("a JSON-RPC error response is recorded as interaction_error with its code", async () => {
  const client = new McpLogClient({ url: mcplog.url, apiKey: WRITER_KEY, mcpId: MCP_ID, flushOnExit: false, logger: captureLogger() });
  // A bare transport pair: the "server" side answers tools/call with a JSON-RPC error by hand.
  const [ct, st] = InMemoryTransport.createLinkedPair();
  const received = [];
  ct.onmessage = (m) => received.push(m);
  st.onmessage = (m) => {
    if (m.method === "tools/call") void st.send({ jsonrpc: "2.0", id: m.id, error: { code: -32602, message: "Unknown tool: nope" } });
  };
  // Instrumented after its handler is set (as on an already-connected transport): the tap wraps it.
  instrument(st, { client });
  await ct.start();
  await st.start();
  await ct.send({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "nope", arguments: {} } });
  // The same JSON-RPC id again after the first answer: a new interaction.
  await ct.send({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "nope", arguments: {} } });
  assert.equal(received.length, 2);
  await client.flush(5000);
  const failed = await waitFor(async () => {
    const l = (await mcplog.list()).interactions.filter((i) => i.request_data.tool === "nope" && i.status === "failed");
    return l.length === 2 && l;
  }, 5000, "2 failed interactions");
  for (const f of failed) assert.deepEqual(f.error_data, { message: "Unknown tool: nope", type: "jsonrpc_error", code: -32602 });
  await client.close(1000);
});

test("a transport closed mid-call ends the call as cancelled (one terminal event)", async () => {
  const client = new McpLogClient({ url: mcplog.url, apiKey: WRITER_KEY, mcpId: MCP_ID, flushOnExit: false, logger: captureLogger() });
  const { server, cancelStarted } = buildServer();
  instrument(server, { client });
  const [ct, st] = InMemoryTransport.createLinkedPair();
  await server.connect(st);
  const mcp = new Client({ name: "c", version: "1" });
  await mcp.connect(ct);
  const before = new Set((await mcplog.list()).interactions.map((i) => i.interaction_id));
  const call = mcp.callTool({ name: "wait_forever", arguments: {} });
  await cancelStarted;
  await mcp.close(); // closes both ends of the pair
  await assert.rejects(call);
  await client.flush(5000);
  const [rec] = await waitFor(async () => {
    const l = (await mcplog.list()).interactions.filter((i) => !before.has(i.interaction_id));
    return l.length === 1 && l[0].status === "cancelled" && l;
  }, 5000, "cancelled interaction");
  assert.match(rec.cancel_data.reason, /transport closed/);
  assert.equal(rec.metadata.event_count, 2);
  await client.close(1000);
});

test("a low-level Server is instrumented the same way; structuredContent is the result_data", async () => {
  const client = new McpLogClient({ url: mcplog.url, apiKey: WRITER_KEY, mcpId: MCP_ID, flushOnExit: false, logger: captureLogger() });
  const server = new Server({ name: "low", version: "1" }, { capabilities: { tools: {} } });
  server.setRequestHandler(CallToolRequestSchema, async (req) => ({
    content: [{ type: "text", text: "{}" }],
    structuredContent: { echoed: req.params.arguments },
  }));
  assert.equal(instrument(server, { client }), server);
  const [ct, st] = InMemoryTransport.createLinkedPair();
  await server.connect(st);
  const mcp = new Client({ name: "c", version: "1" });
  await mcp.connect(ct);
  const before = new Set((await mcplog.list()).interactions.map((i) => i.interaction_id));
  await mcp.callTool({ name: "echo", arguments: { x: [1, 2] } });
  await client.flush(5000);
  const [rec] = await waitFor(async () => {
    const l = (await mcplog.list()).interactions.filter((i) => !before.has(i.interaction_id));
    return l.length === 1 && l[0].status === "completed" && l;
  }, 5000, "completed interaction");
  assert.deepEqual(rec.request_data, { tool: "echo", arguments: { x: [1, 2] } });
  assert.deepEqual(rec.result_data, { echoed: { x: [1, 2] } });
  assert.throws(() => instrument({}, { client }), TypeError);
  assert.throws(() => instrument(server, {}), TypeError);
  await mcp.close();
  await client.close(1000);
});
