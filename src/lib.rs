//! mcplog: an append-only, event-sourced interaction log for MCP systems.
//!
//! Ground state is the segment log ([`storage`]); everything else is derived from it and rebuilt
//! on every start: the [`projector`] folds events into interaction records, the [`engine`] appends
//! new events with group commit and keeps the view current, and [`http`] serves it. See
//! `ARCHITECTURE.md` for the map and the invariants.

// In the library only: criterion's macros in the benches make undocumented public items.
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod event;
pub mod hex;
pub mod http;
pub mod latency;
pub mod otlp;
pub mod projector;
pub mod query;
pub mod ratelimit;
pub mod redact;
pub mod refusal;
pub mod scope;
pub mod server;
pub mod storage;
pub mod telemetry;
