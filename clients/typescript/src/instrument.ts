// instrument(): the one-line integration. Given a transport, taps it; given an McpServer or a
// low-level Server, wraps its connect() so that every transport it is connected to is tapped
// (Streamable HTTP connects one transport per session).

import type { McpLogClient } from "./client.js";
import { DEFAULT_MAX_IN_FLIGHT_CALLS, tapTransport, type TapOptions, type TransportLike } from "./tap.js";

export interface InstrumentOptions {
  client: McpLogClient;
  /** Record tool arguments in request_data. Default: the client's captureArguments (true). */
  captureArguments?: boolean;
  /** Record tool results in result_data. Default: the client's captureResults (true). */
  captureResults?: boolean;
  /** Most tool calls tracked at once per transport. Default 10 000. */
  maxInFlightCalls?: number;
}

const INSTRUMENTED = Symbol.for("mcplog.instrumented");

type Connectable = { connect(transport: TransportLike, ...rest: unknown[]): Promise<unknown> };

function isTransport(v: any): v is TransportLike {
  return typeof v?.send === "function" && typeof v?.start === "function";
}

/** McpServer (server/mcp.js): its connect() delegates to the Server in `.server`. */
function isMcpServer(v: any): v is Connectable & { server: { transport?: TransportLike } } {
  return typeof v?.connect === "function" && typeof v?.server?.connect === "function";
}

/** Server (server/index.js) or any Protocol: connect() attaches the transport. */
function isProtocol(v: any): v is Connectable & { transport?: TransportLike } {
  return typeof v?.connect === "function" && typeof v?.setRequestHandler === "function";
}

/**
 * Records every `tools/call` handled by `target` in mcplog, one interaction per call.
 * `target`: an McpServer or Server (connected or not), or a server-side Transport.
 * Returns `target`. Throws a TypeError if `target` is none of these (a setup mistake).
 */
export function instrument<T extends object>(target: T, options: InstrumentOptions): T {
  const client = options?.client;
  if (!client || typeof client.emit !== "function") throw new TypeError("instrument: options.client (an McpLogClient) is required");
  const tapOptions: TapOptions = {
    client,
    captureArguments: options.captureArguments ?? client.options?.captureArguments ?? true,
    captureResults: options.captureResults ?? client.options?.captureResults ?? true,
    maxInFlightCalls: options.maxInFlightCalls ?? DEFAULT_MAX_IN_FLIGHT_CALLS,
  };

  if (isTransport(target)) return tapTransport(target, tapOptions) as unknown as T;

  if (!isMcpServer(target) && !isProtocol(target)) {
    throw new TypeError("instrument: expected an McpServer, a Server, or a Transport from @modelcontextprotocol/sdk");
  }
  const server = target as T & Connectable & { [INSTRUMENTED]?: true };
  if (server[INSTRUMENTED]) return target;
  Object.defineProperty(server, INSTRUMENTED, { value: true, enumerable: false });

  const originalConnect = server.connect;
  server.connect = function (this: unknown, transport: TransportLike, ...rest: unknown[]) {
    // Tapped before the SDK attaches: Protocol.connect() keeps our onmessage and calls it first.
    if (isTransport(transport)) tapTransport(transport, tapOptions);
    return originalConnect.call(this, transport, ...rest);
  };

  // Already connected: tap the live transport too (the tap then wraps the SDK's handlers).
  const live = isMcpServer(target) ? target.server.transport : (target as { transport?: TransportLike }).transport;
  if (isTransport(live)) tapTransport(live, tapOptions);
  return target;
}
