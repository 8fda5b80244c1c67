//! Integration tests: every test drives a real `mcplog serve` process over HTTP, on real files.
//!
//! - `validation`: every rule of SPEC §2 refused with a 4xx JSON error, nothing stored.
//! - `ingest`: single and batch ingest, idempotency, conflicts, reading records and events back.
//! - `durability`: SIGKILL under concurrent load, restarted several times.
//! - `recovery`: a torn tail is truncated, corruption elsewhere stops start-up.

mod access;
mod audit;
mod common;
mod dashboard;
mod durability;
mod ingest;
mod lifecycle;
mod openapi;
mod operations;
mod queries;
mod readme;
mod recovery;
mod repair;
mod validation;
