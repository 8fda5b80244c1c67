// The retry rules, row by row from clients/retry-cases.json: the table the Python package's
// suite runs too, which keeps the two packages' rules the same.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import { test } from "node:test";
import { classify, postBatch, RESPONSE_BYTES_MAX } from "../dist/http.js";
import { parseRetryAfterMs, retryDelayMs } from "../dist/timing.js";

const CASES = JSON.parse(readFileSync(new URL("../../retry-cases.json", import.meta.url), "utf8"));

const eventsOf = (n) => Array.from({ length: n }, (_, i) => ({ body: `{"i":${i}}`, bytes: 7, seq: i + 1 }));

/** An outcome in the table's terms. */
function described(outcome, events) {
  const index = (event) => events.indexOf(event);
  switch (outcome.kind) {
    case "settled":
      return {
        decision: "settled",
        delivered: outcome.delivered.map(index),
        rejected: outcome.rejected.map((r) => ({ index: index(r.event), http_status: r.httpStatus, code: r.code })),
        resend: outcome.resend.map(index),
      };
    case "retry":
      return { decision: "retry", not_before_ms: outcome.retryAfterMs };
    case "too_large":
      return { decision: "split" };
    case "partial_unsupported":
      return { decision: "partial_unsupported" };
    default:
      return { decision: outcome.kind };
  }
}

/** The row's expectation; a rejection without a code leaves the code unchecked. */
function expected(row, got) {
  const want = structuredClone(row.expect);
  (want.rejected ?? []).forEach((r, i) => {
    if (!("code" in r)) r.code = got.rejected?.[i]?.code;
  });
  return want;
}

for (const row of CASES.answers) {
  test(`answer: ${row.case}`, () => {
    const events = eventsOf(row.events);
    const text = row.body_text ?? (row.body === undefined ? "" : JSON.stringify(row.body));
    const got = described(classify(events, row.status, text, row.retry_after ?? null, row.partial), events);
    assert.deepEqual(got, expected(row, got));
  });
}

for (const row of CASES.retry_after) {
  test(`Retry-After: ${row.case}`, () => {
    assert.equal(parseRetryAfterMs(row.header, row.now_ms), row.expect_ms);
  });
}

for (const row of CASES.delays) {
  test(`delay: ${row.case}`, () => {
    const ms = retryDelayMs(row.attempt, row.base_ms, row.max_ms, row.retry_after_ms, () => row.random);
    assert.ok(Math.abs(ms - row.expect_ms) <= 1, `${ms} ms, expected ${row.expect_ms}`);
  });
}

for (const row of CASES.sent) {
  test(`sent: ${row.case}`, async () => {
    const server = await failingServer(row.failure);
    try {
      const events = eventsOf(1);
      const outcome = await postBatch(events, {
        baseUrl: server.url,
        apiKey: "key",
        // Short only where the timeout is the failure: elsewhere a slow machine must not turn
        // the failure under test into a timeout.
        timeoutMs: row.failure === "timeout" ? 500 : 10_000,
        stopSignal: new AbortController().signal,
        partial: true,
      });
      assert.deepEqual(described(outcome, events), row.expect);
    } finally {
      await server.close();
    }
  });
}

/** A local socket failing the way `kind` names. */
async function failingServer(kind) {
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    let request = "";
    socket.on("data", (chunk) => {
      request += chunk.toString("latin1");
      if (!wholeRequest(request)) return; // closing on unread bytes would reset the connection
      if (kind === "redirect") {
        const path = request.split(" ")[1];
        const status = path === "/elsewhere" ? "200 OK" : "307 Temporary Redirect\r\nLocation: /elsewhere";
        const body = '{"status":"accepted"}';
        socket.end(`HTTP/1.1 ${status}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        request = "";
      } else if (kind === "answer_too_large") {
        const size = RESPONSE_BYTES_MAX + 1;
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
        socket.end(Buffer.alloc(size, " "));
      } else if (kind === "closed_mid_answer") {
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"st');
      } else if (kind === "closed_without_answer") {
        socket.end();
      } // "timeout": answers nothing
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  const close = () => {
    for (const s of sockets) s.destroy();
    return new Promise((resolve) => server.close(resolve));
  };
  if (kind === "refused") await close(); // nothing listens on the port any more
  return { url, close: kind === "refused" ? async () => {} : close };
}

function wholeRequest(text) {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const length = Number(/content-length:\s*(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
  return Buffer.byteLength(text.slice(end + 4), "latin1") >= length;
}
