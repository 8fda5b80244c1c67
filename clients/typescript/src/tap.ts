// The transport tap: watches the JSON-RPC messages of one MCP transport and turns each
// `tools/call` into one mcplog interaction (start, progress..., exactly one terminal event).
//
// Why a tap and not server middleware: @modelcontextprotocol/sdk 1.x has no middleware hook.
// Every message of a session passes through its transport: inbound through `onmessage`,
// outbound through `send()`, so both are wrapped. The SDK cooperates with this: in
// shared/protocol.js, Protocol.connect(transport) saves the `onmessage`/`onclose`/`onerror`
// already set on the transport and calls them before its own handling (since SDK 1.14.0;
// earlier versions overwrote them, hence the peer dependency range). So a tap installed
// before connect() sees every inbound message first; one installed after connect() wraps the
// SDK's handler instead. Both orders work.
//
// Calls are keyed by JSON-RPC id, which is only unique within one session; each transport (one
// per session with Streamable HTTP) therefore has its own CallTracker, and the interaction id
// sent to mcplog is a fresh UUIDv7 per call.

import type { McpLogClient } from "./client.js";
import { uuidv7 } from "./uuid.js";

/** The parts of an SDK Transport the tap touches (structural, so the SDK stays optional). */
export interface TransportLike {
  start(): Promise<void>;
  send(message: unknown, options?: unknown): Promise<void>;
  onmessage?: ((message: any, extra?: any) => void) | undefined;
  onclose?: (() => void) | undefined;
}

export interface TapOptions {
  client: McpLogClient;
  /** Record `arguments` in request_data. */
  captureArguments: boolean;
  /** Record the tool result in result_data. */
  captureResults: boolean;
  /** Most calls tracked at once per transport; further calls are not recorded (and warned about). */
  maxInFlightCalls: number;
}

export const DEFAULT_MAX_IN_FLIGHT_CALLS = 10_000;

const TAPPED = Symbol.for("mcplog.tapped");

interface Call {
  interactionId: string;
  requestKey: string;
  progressKey: string | null;
}

type Json = Record<string, any>;

/** Keys keep 1 and "1" apart: JSON-RPC ids and progress tokens may be numbers or strings. */
function keyOf(id: unknown): string | null {
  return typeof id === "string" || typeof id === "number" ? `${typeof id}:${id}` : null;
}

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Follows the calls of one session and emits their events. */
export class CallTracker {
  /** In-flight calls by JSON-RPC request id. Bounded by maxInFlightCalls. */
  private readonly calls = new Map<string, Call>();
  /** The same calls, by the progress token the client asked for. */
  private readonly byProgressToken = new Map<string, Call>();

  constructor(private readonly opts: TapOptions) {}

  get inFlight(): number {
    return this.calls.size;
  }

  /** A message from the MCP client to this server. */
  inbound(message: unknown): void {
    if (Array.isArray(message)) {
      for (const m of message) this.inbound(m); // JSON-RPC batch (protocol 2025-03-26)
      return;
    }
    if (!isObject(message) || typeof message.method !== "string") return;
    if (message.method === "tools/call" && "id" in message) this.onCallRequest(message);
    else if (message.method === "notifications/cancelled") this.onCancelled(message.params);
  }

  /** A message from this server to the MCP client. */
  outbound(message: unknown): void {
    if (Array.isArray(message)) {
      for (const m of message) this.outbound(m);
      return;
    }
    if (!isObject(message)) return;
    if (message.method === "notifications/progress") this.onProgress(message.params);
    else if (message.method === undefined && ("result" in message || "error" in message)) this.onResponse(message);
  }

  /** The transport closed: the SDK aborts the handlers and will send no response for them. */
  closed(): void {
    for (const call of [...this.calls.values()]) {
      this.finish(call, "cancelled", { cancel_data: { reason: "transport closed before the call finished" } });
    }
  }

  private onCallRequest(message: Json): void {
    const requestKey = keyOf(message.id);
    if (requestKey === null) return;
    const previous = this.calls.get(requestKey);
    if (previous) {
      // A client reusing an id still in flight breaks JSON-RPC; end the older call so that it
      // still gets exactly one terminal event.
      this.finish(previous, "cancelled", { cancel_data: { reason: "request id reused by the client" } });
    }
    if (this.calls.size >= this.opts.maxInFlightCalls) {
      this.opts.client._warn("tap_full", `more than maxInFlightCalls=${this.opts.maxInFlightCalls} tool calls in flight on one transport: call not recorded`);
      return;
    }
    const params = isObject(message.params) ? message.params : {};
    const progressKey = isObject(params._meta) ? keyOf(params._meta.progressToken) : null;
    const call: Call = { interactionId: uuidv7(), requestKey, progressKey };
    this.calls.set(requestKey, call);
    if (progressKey !== null) this.byProgressToken.set(progressKey, call);

    const request: Json = { tool: typeof params.name === "string" ? params.name : null };
    if (this.opts.captureArguments) request.arguments = isObject(params.arguments) ? params.arguments : {};
    this.opts.client.emit("interaction_start", call.interactionId, { request_data: request });
  }

  private onCancelled(params: unknown): void {
    if (!isObject(params)) return;
    const key = keyOf(params.requestId);
    const call = key === null ? undefined : this.calls.get(key);
    if (!call) return;
    const reason = typeof params.reason === "string" ? params.reason : "cancelled by the client";
    this.finish(call, "cancelled", { cancel_data: { reason } });
  }

  private onProgress(params: unknown): void {
    if (!isObject(params)) return;
    const key = keyOf(params.progressToken);
    const call = key === null ? undefined : this.byProgressToken.get(key);
    if (!call) return;
    const data: Json = {};
    for (const f of ["progress", "total", "message"]) if (params[f] !== undefined) data[f] = params[f];
    this.opts.client.emit("interaction_progress", call.interactionId, { progress_data: data });
  }

  private onResponse(message: Json): void {
    const key = keyOf(message.id);
    const call = key === null ? undefined : this.calls.get(key);
    if (!call) return; // not a tools/call, or already cancelled: its one terminal event is out
    if (isObject(message.error)) {
      const e = message.error;
      const data: Json = { message: typeof e.message === "string" ? e.message : "JSON-RPC error", type: "jsonrpc_error" };
      if (typeof e.code === "number") data.code = e.code;
      this.finish(call, "error", { error_data: data });
      return;
    }
    const result = isObject(message.result) ? message.result : {};
    if (result.isError === true) {
      this.finish(call, "error", { error_data: { message: errorText(result), type: "tool_error" } });
      return;
    }
    this.finish(call, "complete", this.opts.captureResults ? { result_data: resultData(result) } : {});
  }

  private finish(call: Call, action: "complete" | "error" | "cancelled", fields: Json): void {
    this.calls.delete(call.requestKey);
    if (call.progressKey !== null && this.byProgressToken.get(call.progressKey) === call) this.byProgressToken.delete(call.progressKey);
    this.opts.client.emit(action, call.interactionId, fields);
  }
}

/** The structured result when the tool has one, else its content blocks. */
function resultData(result: Json): Json {
  if (isObject(result.structuredContent)) return result.structuredContent;
  if (Array.isArray(result.content)) return { content: result.content };
  const { _meta, ...rest } = result;
  return rest;
}

/** The SDK reports a throwing tool as `isError: true` with the message as text content. */
function errorText(result: Json): string {
  const texts = Array.isArray(result.content)
    ? result.content.filter((c: unknown) => isObject(c) && c.type === "text" && typeof c.text === "string").map((c: Json) => c.text)
    : [];
  return texts.length > 0 ? texts.join("\n") : "tool returned isError";
}

/**
 * Taps a transport (once: a second call returns it unchanged). Returns the transport.
 * The tap never throws into the SDK: a failure to record is warned about, and the message
 * goes through untouched.
 */
export function tapTransport<T extends TransportLike>(transport: T, opts: TapOptions): T {
  const t = transport as T & { [TAPPED]?: CallTracker };
  if (t[TAPPED]) return transport;
  const tracker = new CallTracker(opts);
  Object.defineProperty(t, TAPPED, { value: tracker, enumerable: false });
  const guard = (what: string, f: () => void) => {
    try {
      f();
    } catch (err) {
      opts.client._warn("tap_error", `instrument: could not record ${what}: ${(err as Error)?.message ?? err}`);
    }
  };

  const prevOnMessage = t.onmessage;
  t.onmessage = function (this: unknown, message: unknown, extra?: unknown) {
    guard("an inbound message", () => tracker.inbound(message));
    return prevOnMessage?.call(this, message, extra);
  };

  const prevOnClose = t.onclose;
  t.onclose = function (this: unknown) {
    guard("a transport close", () => tracker.closed());
    return prevOnClose?.call(this);
  };

  const originalSend = t.send;
  t.send = function (this: unknown, message: unknown, options?: unknown) {
    guard("an outbound message", () => tracker.outbound(message));
    return originalSend.call(this, message, options);
  } as T["send"];

  return transport;
}

/** The tracker of a tapped transport, for tests and diagnostics. */
export function trackerOf(transport: object): CallTracker | undefined {
  return (transport as { [TAPPED]?: CallTracker })[TAPPED];
}
