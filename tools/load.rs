//! `mcplog-load`: drives a real mcplog server over HTTP and compares it with a parse-only axum
//! handler, in the same run, so the figure that matters is a ratio the machine's speed cancels out
//! of.
//!
//! - `mcplog-load compare`: starts `mcplog serve` (the binary beside this one) on a fresh data
//!   directory and a parse-only baseline server (and, if asked, a second mcplog with another
//!   configuration and a peer server such as the SQLite group-commit one), then alternates rounds
//!   of the same load against each and prints events/s, latency, server CPU per event and the
//!   ratios.
//! - `mcplog-load run --addr HOST:PORT --key KEY`: the load alone, against any server.
//! - `mcplog-load baseline-server`: the parse-only handler: same routes, same validation, same
//!   answer shape, but nothing stored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::{Parser, Subcommand};
use mcplog::client::Client;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "mcplog-load",
    version,
    about = "Load generator for mcplog, with a parse-only baseline"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone, Copy)]
struct LoadArgs {
    /// Concurrent clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Events per request: 1 posts single events, more posts batches.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds of measured load per round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Put secrets in every event (a password, an API key, a bearer token) for redaction to find.
    #[arg(long)]
    secrets: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Alternate rounds against the real server and the parse-only baseline; print the ratio.
    Compare(CompareArgs),
    /// Run the load against a running server.
    Run {
        #[command(flatten)]
        load: LoadArgs,
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// An API key allowed to write.
        #[arg(long, env = "MCPLOG_KEY")]
        key: String,
    },
    /// Serve the parse-only baseline handler.
    BaselineServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
    },
}

/// `mcplog-load compare`'s arguments.
#[derive(clap::Args)]
struct CompareArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Rounds against each server; the median round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The mcplog binary (default: `mcplog` beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// A configuration file for the mcplog server.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also measure a second mcplog server run with this configuration file (e.g. redaction
    /// off against the default rules).
    #[arg(long)]
    versus_config: Option<PathBuf>,
    /// Also measure a second mcplog binary (e.g. a build before a change), with
    /// `--versus-config` if given.
    #[arg(long)]
    versus_bin: Option<PathBuf>,
    /// Also measure a peer server binary taking `PORT DB_PATH` and the same ingest routes
    /// (such as the SQLite group-commit peer).
    #[arg(long)]
    peer_bin: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::BaselineServer { bind } => runtime.block_on(baseline_server(&bind)),
        Cmd::Run { load, addr, key } => {
            let result = runtime.block_on(run_load(addr, &key, load, 0))?;
            println!("{}", result.describe());
            Ok(())
        }
        Cmd::Compare(args) => runtime.block_on(compare(args)),
    }
}

/// What one round of load achieved.
#[derive(Debug, Clone)]
struct LoadResult {
    events: u64,
    /// Events acknowledged over the whole round, warm-up included: what the server's CPU time
    /// of the round is divided by.
    events_all: u64,
    /// CPU time the server process spent in the round, if it was measured.
    server_cpu: Option<Duration>,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl LoadResult {
    /// Nothing yet, for a round measured over `elapsed`.
    fn empty(elapsed: Duration) -> LoadResult {
        LoadResult {
            events: 0,
            events_all: 0,
            server_cpu: None,
            requests: 0,
            errors: 0,
            elapsed,
            latencies_us: Vec::new(),
        }
    }

    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn latency_percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        f64::from(sorted[index]) / 1000.0
    }

    /// Server CPU time per acknowledged event, in microseconds.
    fn cpu_us_per_event(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.events_all > 0).then(|| cpu.as_secs_f64() * 1e6 / self.events_all as f64)
    }

    fn describe(&self) -> String {
        let cpu = self
            .cpu_us_per_event()
            .map_or(String::new(), |us| format!("  server CPU {us:.2} µs/event"));
        format!(
            "{:>10.0} events/s  {:>8} requests  {} errors  p50 {:.2} ms  p99 {:.2} ms{cpu}",
            self.events_per_s(),
            self.requests,
            self.errors,
            self.latency_percentile_ms(0.50),
            self.latency_percentile_ms(0.99)
        )
    }
}

/// A server measured by `compare`.
struct Contestant {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    key: String,
    results: Vec<LoadResult>,
}

/// A contestant's server stops with it, however the run ends: a run that fails to start a later
/// contestant, or fails in a round, leaves no server behind (one once held its caller's locks).
impl Drop for Contestant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let CompareArgs {
        load,
        rounds,
        server_bin,
        config,
        versus_config,
        versus_bin,
        peer_bin,
    } = args;
    let me = std::env::current_exe()?;
    let server_bin = server_bin.unwrap_or_else(|| me.with_file_name("mcplog"));
    let scratch = std::env::temp_dir().join(format!("mcplog-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let serve = |bin: &PathBuf,
                 dir: PathBuf,
                 config: &Option<PathBuf>|
     -> anyhow::Result<(Child, SocketAddr, String)> {
        let mut command = Command::new(bin);
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&dir);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let (child, addr) = spawn_and_wait(command).context("starting mcplog serve")?;
        let key = std::fs::read_to_string(dir.join("admin.key"))?
            .trim()
            .to_owned();
        Ok((child, addr, key))
    };
    let contestant = |name, (child, addr, key): (Child, SocketAddr, String)| Contestant {
        name,
        child,
        addr,
        key,
        results: Vec::new(),
    };
    let mut contestants = vec![contestant(
        "mcplog",
        serve(&server_bin, scratch.join("mcplog"), &config)?,
    )];
    let key = contestants[0].key.clone();
    let mut base_cmd = Command::new(&me);
    base_cmd.arg("baseline-server");
    let (child, addr) = spawn_and_wait(base_cmd).context("starting the baseline server")?;
    contestants.push(contestant("parse-only", (child, addr, key.clone())));
    if versus_config.is_some() || versus_bin.is_some() {
        let bin = versus_bin.as_ref().unwrap_or(&server_bin);
        let versus = serve(bin, scratch.join("versus"), &versus_config)?;
        contestants.push(contestant("versus", versus));
    }
    if let Some(peer) = &peer_bin {
        // A peer takes `PORT DB_PATH`, and says nothing when it is ready: wait for its port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(peer)
            .arg(port.to_string())
            .arg(scratch.join("peer.db"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the peer {}", peer.display()))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let ready = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > ready {
                bail!("the peer did not open port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        contestants.push(contestant("peer", (child, addr, key.clone())));
    }

    println!(
        "# {} clients, {} event(s) per request, {} s per round, {rounds} rounds each, alternating",
        load.clients, load.batch, load.seconds
    );
    let mut offset = 0;
    for round in 0..rounds {
        for c in contestants.iter_mut() {
            let result = measured_round(&c.child, c.addr, &c.key, load, offset).await?;
            offset += result.requests + 1;
            println!("round {round} {:<10} {}", c.name, result.describe());
            c.results.push(result);
        }
    }
    let mut medians = Vec::new();
    for mut c in contestants {
        let _ = c.child.kill();
        let _ = c.child.wait();
        c.results
            .sort_by(|a, b| a.events_per_s().total_cmp(&b.events_per_s()));
        let median = c.results[c.results.len() / 2].clone();
        println!("median {:<10} {}", c.name, median.describe());
        medians.push((c.name, median));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let (_, mcplog) = &medians[0];
    for (name, other) in &medians[1..] {
        println!(
            "ratio mcplog / {name}: {:.2} events/s",
            mcplog.events_per_s() / other.events_per_s()
        );
        // CPU per event is steadier than throughput on a shared machine: it does not depend on
        // how much CPU the load generator and the neighbours left to the server.
        if let (Some(o), Some(m)) = (other.cpu_us_per_event(), mcplog.cpu_us_per_event()) {
            println!("server CPU per event (µs), {name}: {o:.2}, mcplog: {m:.2}");
        }
    }
    Ok(())
}

/// One round of load against a server process, with the CPU time that process spent in it.
async fn measured_round(
    server: &Child,
    addr: SocketAddr,
    key: &str,
    load: LoadArgs,
    id_offset: u64,
) -> anyhow::Result<LoadResult> {
    let before = process_cpu(server.id());
    let mut result = run_load(addr, key, load, id_offset).await?;
    let after = process_cpu(server.id());
    result.server_cpu = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    Ok(result)
}

/// User plus system CPU time of a process so far, from /proc (Linux only; `None` elsewhere).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 counted from the state
    // (field 3), the first one after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Clock ticks are 100 a second on every Linux this runs on (USER_HZ).
    Some(Duration::from_millis(ticks * 10))
}

/// Starts a server process and waits for its "listening on http://ADDR" line on stderr.
fn spawn_and_wait(mut command: Command) -> anyhow::Result<(Child, SocketAddr)> {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on http://").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((child, addr.parse()?)),
        Err(_) => {
            let _ = child.kill();
            bail!("the server did not report its address")
        }
    }
}

/// Runs `load.clients` clients for `load.seconds` after a one-second warm-up.
async fn run_load(
    addr: SocketAddr,
    key: &str,
    load: LoadArgs,
    id_offset: u64,
) -> anyhow::Result<LoadResult> {
    let warmup = Duration::from_secs(1);
    let measured = Duration::from_secs(load.seconds);
    let started = Instant::now();
    let (measure_from, measure_until) = (started + warmup, started + warmup + measured);
    let next_id = Arc::new(AtomicU64::new(id_offset));
    let mut tasks = Vec::new();
    for client_no in 0..load.clients {
        let key = key.to_owned();
        let next_id = Arc::clone(&next_id);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await?;
            let mut result = LoadResult::empty(measured);
            loop {
                let now = Instant::now();
                if now >= measure_until {
                    break;
                }
                let n = next_id.fetch_add(1, Ordering::Relaxed);
                let (path, body) = request_body(client_no, n, load.batch, load.secrets);
                let sent = Instant::now();
                let response = client.post(path, Some(&key), body).await?;
                let done = Instant::now();
                if response.status == StatusCode::OK {
                    result.events_all += load.batch as u64;
                }
                if sent < measure_from || done > measure_until {
                    continue;
                }
                result.requests += 1;
                if response.status == StatusCode::OK {
                    result.events += load.batch as u64;
                    result
                        .latencies_us
                        .push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
                } else {
                    result.errors += 1;
                }
            }
            anyhow::Ok(result)
        }));
    }
    let mut total = LoadResult::empty(measured);
    for task in tasks {
        let result = task.await??;
        total.events += result.events;
        total.events_all += result.events_all;
        total.requests += result.requests;
        total.errors += result.errors;
        total.latencies_us.extend(result.latencies_us);
    }
    Ok(total)
}

/// A realistic event (about 250 bytes) or a batch of them.
fn request_body(client_no: usize, n: u64, batch: usize, secrets: bool) -> (&'static str, String) {
    let one = |i: usize| {
        let mut event = json!({
            "action": "interaction_start",
            "interaction_id": format!("load-{client_no}-{n}-{i}"),
            "mcp_id": format!("ocr_workflow_mcp_{:03}", client_no % 8),
            "timestamp": 1_763_900_000.0 + n as f64,
            "request_data": {"file": "invoice-2026-11.pdf", "pages": 3, "lang": "en", "priority": "normal"},
        });
        if secrets {
            event["request_data"]["password"] = json!("hunter2");
            event["request_data"]["headers"] =
                json!({"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz0123"});
            event["request_data"]["note"] = json!("key sk-abcdefghijklmnopqrstuvwxyz01");
        }
        event.to_string()
    };
    if batch <= 1 {
        ("/api/v2/interactions", one(0))
    } else {
        let items: Vec<String> = (0..batch).map(one).collect();
        (
            "/api/v2/interactions/batch",
            format!("[{}]", items.join(",")),
        )
    }
}

/// The parse-only handler: validation and the answer's shape, no storage.
async fn baseline_server(bind: &str) -> anyhow::Result<()> {
    let seq = Arc::new(AtomicU64::new(1));
    let app = Router::new()
        .route("/api/v2/interactions", post(baseline_one))
        .route("/api/v2/interactions/batch", post(baseline_batch))
        .with_state(seq);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    eprintln!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn baseline_one(
    State(seq): State<Arc<AtomicU64>>,
    body: Bytes,
) -> Result<Json<Value>, StatusCode> {
    let text = std::str::from_utf8(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let event = mcplog::event::validate(text).map_err(|_| StatusCode::UNPROCESSABLE_ENTITY)?;
    let seq = seq.fetch_add(1, Ordering::Relaxed);
    Ok(Json(
        json!({"status": "accepted", "interaction_id": event.interaction_id, "seq": seq, "queue_position": 0}),
    ))
}

async fn baseline_batch(
    State(seq): State<Arc<AtomicU64>>,
    body: Bytes,
) -> Result<Json<Value>, StatusCode> {
    let text = std::str::from_utf8(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let items =
        mcplog::event::split_batch(text, usize::MAX).map_err(|_| StatusCode::BAD_REQUEST)?;
    for item in &items {
        mcplog::event::validate(item.text).map_err(|_| StatusCode::UNPROCESSABLE_ENTITY)?;
    }
    let first = seq.fetch_add(items.len() as u64, Ordering::Relaxed);
    let seqs: Vec<u64> = (first..first + items.len() as u64).collect();
    Ok(Json(
        json!({"status": "accepted", "count": seqs.len(), "seqs": seqs, "duplicates": 0, "queue_position": 0}),
    ))
}
