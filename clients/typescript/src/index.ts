// Public API of the mcplog client.

export { McpLogClient, DEFAULT_FLUSH_TIMEOUT_MS } from "./client.js";
export type { McpLogClientOptions } from "./options.js";
export { DEFAULTS } from "./options.js";
export type { FlushResult, Counters } from "./worker.js";
export type { Rejection } from "./http.js";
export type { Action, ActionName, EventFields } from "./events.js";
export { instrument, type InstrumentOptions } from "./instrument.js";
export type { TransportLike } from "./tap.js";
export { uuidv7 } from "./uuid.js";
export { REDACTED } from "./redact.js";
export { replay, parseReplayLine, ReplayError } from "./replay.js";
export type { ReplayEvent, Gap, GapReason, Heartbeat, ReplayItem, ReplayOptions } from "./replay.js";
