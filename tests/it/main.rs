//! Integration tests: every test drives a real `mcplog serve` process (or `mcplog keygen`,
//! `mcplog-seg`) over HTTP, on real files.
//!
//! - `access`: roles, keygen and the master secret, tampering, expiry, revocation, no raw key on
//!   disk, in the log or in any error answer.
//! - `audit`: replay, follow, bit flips, forged records, the offline tool beside a live server.
//! - `clients`: the Python and TypeScript client packages' suites, with the real MCP SDKs.
//! - `cluster`: cluster mode against three real `nats-server` processes: load through a killed
//!   stream leader and a killed node, a lost majority, a follower fed a forged group.
//! - `cluster_liveness`: a frozen NATS server left within seconds, `/readyz` 503 while a node
//!   cannot write or is catching up a backlog, 200 once it can.
//! - `cluster_retention`: retention trims the stream; a node the trim left behind refuses or
//!   halts; a node joins from a live peer's backup and agrees byte for byte.
//! - `cluster_revocation`: a key revoked through one node refused by every node, a later one too.
//! - `cluster_trust`: a stray message and a group without the shared key on the stream are
//!   skipped, a node with other redaction rules cannot write, `cluster.adopt_rules`.
//! - `common`: the helpers: a server on a free port over a temporary data directory.
//! - `dashboard`: headless Chromium against known data.
//! - `durability`: SIGKILL under concurrent load, restarted several times.
//! - `ingest`: single and batch ingest, idempotency, tenants sharing an id, query parameters.
//! - `keys`: keys that change while the server runs: streams ended by revocation and expiry, a
//!   revocation as a record in the log, `admin.key` read again, a master secret rotation,
//!   `/metrics` behind a key.
//! - `lifecycle`: shutdown, timeouts, the connection cap, slow and stalled readers, heartbeats,
//!   unreadable or altered events in a replay.
//! - `openapi`: every route documented, every response conforming, the event schema.
//! - `operations`: retention, configuration, JSON logs, SIGTERM under load, a full disk, modes.
//! - `otlp`: the OTLP/HTTP trace receiver: protobuf and JSON exports, idempotency, bad input, and a
//!   real MCP server's own spans.
//! - `protect`: redaction on every ingest path, in stored bytes, files, replay and records; rate
//!   limits under a flood with a second key answered promptly.
//! - `queries`: stats and metrics over known fixtures, cursors, time ranges, Prometheus.
//! - `readme`: every README example run against a fresh server.
//! - `recovery`: a torn tail is truncated, corruption elsewhere stops start-up.
//! - `repair`: repair, backup, verify agreeing with start-up, paths that are not a log.
//! - `validation`: every validation rule refused with a 4xx JSON error, nothing stored.

mod access;
mod audit;
mod clients;
mod cluster;
mod cluster_liveness;
mod cluster_retention;
mod cluster_revocation;
mod cluster_trust;
mod common;
mod dashboard;
mod durability;
mod ingest;
mod keys;
mod lifecycle;
mod openapi;
mod operations;
mod otlp;
mod protect;
mod queries;
mod readme;
mod recovery;
mod repair;
mod validation;
