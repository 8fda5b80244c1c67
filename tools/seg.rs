//! `mcplog-seg`: reads segment files directly, without the server, read-only and safe while a
//! server writes to them.
//!
//! - `ls DIR`: one line per segment: seqs, events, bytes, sealed or active, receive times, chain hash.
//! - `dump DIR [filters]`: events as NDJSON, in the API's shape (`seq`, `received_at`, `key_id`,
//!   and the client's `event` byte-exact).
//! - `verify DIR`: every CRC, seq continuity and the hash chain; exits 1 naming the file and
//!   offset of the first fault.
//! - `stats DIR`: events, interactions, and counts per mcp_id and status, as JSON.
//! - `repair DATA`: the one command that writes: with the server stopped, moves damaged segment
//!   bytes into `DATA/quarantine/` (never deleting them), keeps what precedes the damage, and
//!   records the chain break it makes, which `verify` then reports.
//! - `backup DATA DEST`: a consistent copy of a live log into a new directory, checked, with its
//!   chain head printed; also how a cluster node joins once retention has trimmed the stream
//!   (started on a live node's copy, it follows the stream from the group holding its last seq).
//!
//! DIR is a data directory or its `segments/` folder. Long scans show a progress bar on a terminal
//! and stay quiet in a pipe.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mcplog::auth::hex;
use mcplog::event::{EventLine, StoredEvent};
use mcplog::projector::Projection;
use mcplog::query;
use mcplog::storage::{
    gaps, list_segments, scan_log, scan_log_parallel, verify_log, BreakKind, Breaks, SegmentInfo,
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "mcplog-seg",
    version,
    about = "Read, verify, back up and repair mcplog segment files without the server"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List segments.
    Ls { dir: PathBuf },
    /// Print events as NDJSON.
    Dump {
        dir: PathBuf,
        /// Only this interaction.
        #[arg(long)]
        interaction: Option<String>,
        /// Only this mcp_id.
        #[arg(long)]
        mcp_id: Option<String>,
        /// Only seqs at or above.
        #[arg(long)]
        from_seq: Option<u64>,
        /// Only seqs at or below.
        #[arg(long)]
        to_seq: Option<u64>,
        /// Only events received at or after (Unix seconds, server clock).
        #[arg(long)]
        since: Option<f64>,
        /// Only events received at or before (Unix seconds, server clock).
        #[arg(long)]
        until: Option<f64>,
    },
    /// Check every CRC, seq continuity and the hash chain.
    Verify { dir: PathBuf },
    /// Counts per mcp_id and status.
    Stats { dir: PathBuf },
    /// With the server stopped: quarantine damaged segment bytes so the log starts again.
    Repair {
        /// The data directory (holding segments/).
        data: PathBuf,
    },
    /// Copy a log, even while a server writes it, and check the copy (a cluster node joining
    /// after a trim starts on a live node's copy).
    Backup {
        /// The data directory to copy.
        data: PathBuf,
        /// A new or empty directory: the copy, a data directory a server can start from.
        dest: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mcplog-seg: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Ls { dir } => ls(dir),
        Cmd::Dump {
            dir,
            interaction,
            mcp_id,
            from_seq,
            to_seq,
            since,
            until,
        } => dump(
            dir,
            Filters {
                interaction,
                mcp_id,
                from_seq,
                to_seq,
                since,
                until,
            },
        ),
        Cmd::Verify { dir } => verify(dir),
        Cmd::Repair { data } => repair(data),
        Cmd::Backup { data, dest } => backup(data, dest),
        Cmd::Stats { dir } => stats(dir),
    }
}

/// `dump`'s filters.
struct Filters {
    interaction: Option<String>,
    mcp_id: Option<String>,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    since: Option<f64>,
    until: Option<f64>,
}

/// One line per segment.
fn ls(dir: PathBuf) -> anyhow::Result<ExitCode> {
    let dir = segments_dir(&dir)?;
    let infos = scan(&dir, |_| {})?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<26} {:>12} {:>12} {:>9} {:>12} {:<7} {:<20} {:<20} chain_hash",
        "segment",
        "first_seq",
        "last_seq",
        "events",
        "bytes",
        "state",
        "received_from",
        "received_to"
    )?;
    for info in &infos {
        writeln!(
            out,
            "{:<26} {:>12} {:>12} {:>9} {:>12} {:<7} {:<20} {:<20} {}",
            info.path.file_name().unwrap_or_default().to_string_lossy(),
            info.first_seq,
            if info.events == 0 {
                "-".to_owned()
            } else {
                (info.first_seq + info.events - 1).to_string()
            },
            info.events,
            info.bytes,
            if info.sealed { "sealed" } else { "active" },
            seconds(info.received_us.0),
            seconds(info.received_us.1),
            hex(&info.hash)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Events as NDJSON, filtered.
fn dump(dir: PathBuf, filters: Filters) -> anyhow::Result<ExitCode> {
    let Filters {
        interaction,
        mcp_id,
        from_seq,
        to_seq,
        since,
        until,
    } = filters;
    let dir = segments_dir(&dir)?;
    let bar = progress_bar(&dir)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    // Segments are checked and formatted on every core, and written in order (storage's
    // `scan_log_parallel`); only lines that pass the filters are formatted.
    let render = |e: &StoredEvent<'_>, buf: &mut Vec<u8>| {
        let received = e.received_at_us as f64 / 1e6;
        let keep = interaction.as_deref().is_none_or(|i| i == e.interaction_id)
            && mcp_id.as_deref().is_none_or(|m| m == e.mcp_id)
            && from_seq.is_none_or(|s| e.seq >= s)
            && to_seq.is_none_or(|s| e.seq <= s)
            && since.is_none_or(|s| received >= s)
            && until.is_none_or(|s| received <= s);
        if keep {
            EventLine::write_checked(e, buf);
        }
    };
    let mut write_error = None;
    // Seqs no event holds are announced as replay announces them: a gap line per cause, in seq
    // order, wherever the seqs skip (before the first segment, between two, before an empty last
    // one), within --from-seq and --to-seq.
    let breaks = Breaks::load(&dir)?;
    let mut reached = from_seq.unwrap_or(1).saturating_sub(1);
    let mut first_retained = None;
    let gap_lines = |next: u64, first_retained: Option<u64>, reached: &mut u64| -> Vec<u8> {
        let mut lines = Vec::new();
        if next > *reached + 1 && to_seq.is_none_or(|to| *reached < to) {
            for gap in gaps(*reached, next, first_retained, breaks.all()) {
                lines.extend_from_slice(gap.line().as_bytes());
            }
        }
        *reached = (*reached).max(next - 1);
        lines
    };
    let scanned = scan_log_parallel(&dir, render, |segment, bytes| {
        if segment.events > 0 && first_retained.is_none() {
            first_retained = Some(segment.first_seq);
        }
        let gap = gap_lines(segment.first_seq, first_retained, &mut reached);
        let written = out.write_all(&gap).and_then(|()| out.write_all(bytes));
        reached = reached.max(segment.first_seq + segment.events - 1);
        bar.inc(segment.bytes);
        if let Err(err) = &written {
            write_error = Some(err.kind());
        }
        written
    });
    bar.finish_and_clear();
    let flushed = match (scanned, write_error) {
        (Ok(_), _) => out.flush(),
        (Err(_), Some(kind)) => Err(std::io::Error::from(kind)),
        (Err(err), None) => return Err(err.into()),
    };
    match flushed {
        // A closed pipe (`| head`) is a normal way to stop reading.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(err) => Err(err.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// Every check start-up makes, and the recorded repairs.
fn verify(dir: PathBuf) -> anyhow::Result<ExitCode> {
    let dir = segments_dir(&dir)?;
    let bar = progress_bar(&dir)?;
    let checked = verify_log(&dir, |bytes| bar.inc(bytes));
    bar.finish_and_clear();
    match checked {
        Ok(infos) => {
            let events: u64 = infos.iter().map(|i| i.events).sum();
            let bytes: u64 = infos.iter().map(|i| i.bytes).sum();
            if let Some(last) = infos.last().filter(|i| i.tail_bytes > 0) {
                eprintln!(
                        "note: {} ends in {} bytes that are not a whole frame yet (a write in progress, or a torn tail the next start cuts: into quarantine/, recorded, numbering past every seq they may have held)",
                        last.path.display(),
                        last.tail_bytes
                    );
            }
            // Breaks a repair or a start-up's cut made are accepted, and always said.
            for record in Breaks::load(&dir)?.all() {
                let moved = record.quarantine.as_deref().unwrap_or("(none moved)");
                match record.kind {
                    BreakKind::Repair => println!(
                        "chain break before seq {} (after seq {}), made by repair at {}: {}; damaged bytes in {moved}",
                        record.first_seq,
                        record.after_seq,
                        seconds(record.repaired_at_us),
                        record.reason,
                    ),
                    BreakKind::Cut => {
                        let missing = record.missing();
                        let skipped = if missing.is_empty() {
                            "no seq skipped".to_owned()
                        } else {
                            format!(
                                "seqs {} to {} skipped, never given again",
                                missing.start,
                                missing.end - 1
                            )
                        };
                        println!(
                            "cut at start-up before seq {} (after seq {}) at {}: {skipped}; {}; cut bytes in {moved}",
                            record.first_seq,
                            record.after_seq,
                            seconds(record.repaired_at_us),
                            record.reason,
                        );
                    }
                }
            }
            let head = infos
                .last()
                .map_or_else(|| "-".to_owned(), |i| hex(&i.hash));
            println!(
                "ok: {} segments, {events} events, {bytes} bytes; chain head {head}",
                infos.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            println!("FAULT: {err:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Quarantines damage until the log checks out (the server stopped).
fn repair(data: PathBuf) -> anyhow::Result<ExitCode> {
    let now_us = mcplog::clock::now_us();
    let steps = mcplog::storage::repair(&data, now_us)
        .with_context(|| format!("repairing {}", data.display()))?;
    if steps.is_empty() {
        println!("ok: nothing to repair");
    }
    for step in &steps {
        let moved = match &step.quarantine {
            None => "nothing moved (a broken link between intact segments)".to_owned(),
            Some(copy) => format!("a copy of the whole segment is in {copy}"),
        };
        println!(
            "repaired {}: {}; kept {} frames{}; {moved}",
            step.segment,
            step.damage,
            step.frames_kept,
            if step.damage.is_at_header() {
                " behind the damaged header, under a rebuilt header"
            } else {
                " before the damage"
            }
        );
        if let Some(record) = &step.broke {
            println!(
                "recorded chain break before seq {} (after seq {}) in segments/{}",
                record.first_seq,
                record.after_seq,
                mcplog::storage::repair::REPAIRS_FILE
            );
        }
    }
    let infos = verify_log(&data.join("segments"), |_| {})
        .context("the repaired log does not check out")?;
    let head = infos
        .last()
        .map_or_else(|| "-".to_owned(), |i| hex(&i.hash));
    println!("ok: the log checks out; chain head {head}");
    Ok(ExitCode::SUCCESS)
}

/// A checked copy of a live log.
fn backup(data: PathBuf, dest: PathBuf) -> anyhow::Result<ExitCode> {
    let copy = mcplog::storage::backup(&data, &dest)
        .with_context(|| format!("backing up {} to {}", data.display(), dest.display()))?;
    println!(
        "ok: {} segments, {} events, {} bytes copied and checked; chain head {}",
        copy.segments,
        copy.events,
        copy.bytes,
        hex(&copy.chain_head)
    );
    Ok(ExitCode::SUCCESS)
}

/// Counts in the stats endpoint's shape.
fn stats(dir: PathBuf) -> anyhow::Result<ExitCode> {
    let dir = segments_dir(&dir)?;
    let mut projection = Projection::new();
    let infos = scan(&dir, |e| projection.apply(e))?;
    // The same counts, in the same shape, as the server's stats (stale after its default
    // stale_after, one hour, from now).
    let (now_us, stale_after_us) = (mcplog::clock::now_us(), 3_600_000_000);
    let mut mcp_ids: Vec<&str> = projection
        .records()
        .map(|r| projection.mcp_name(r.mcp()))
        .collect();
    mcp_ids.sort_unstable();
    mcp_ids.dedup();
    let by_mcp: serde_json::Map<String, serde_json::Value> = mcp_ids
        .into_iter()
        .map(|mcp_id| {
            let (counts, _) = query::record_counts_of(&projection, mcp_id, now_us, stale_after_us);
            (mcp_id.to_owned(), json!(counts))
        })
        .collect();
    let stats = json!({
        "segments": infos.len(),
        "bytes": infos.iter().map(|i| i.bytes).sum::<u64>(),
        "events": projection.events_total(),
        "interactions": projection.record_count(),
        "conflicts": projection.conflicts_total(),
        "records": query::record_counts(&projection, now_us, stale_after_us),
        "by_mcp_id": by_mcp,
    });
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(ExitCode::SUCCESS)
}

/// A data directory's `segments/` folder, or the folder itself if it holds segments (or is
/// named `segments`). Anything else is refused: "0 segments, ok" for a mistyped path would pass
/// an audit that checked nothing.
fn segments_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let inner = dir.join("segments");
    if inner.is_dir() {
        return Ok(inner);
    }
    let holds_segments = dir.is_dir()
        && (dir.file_name().is_some_and(|n| n == "segments")
            || !list_segments(dir).map(|l| l.is_empty()).unwrap_or(true));
    anyhow::ensure!(
        holds_segments,
        "{} is not a data directory (no segments/ in it) nor a segments directory",
        dir.display()
    );
    Ok(dir.to_path_buf())
}

/// Scans with a progress bar on a terminal (hidden in a pipe).
fn scan(dir: &Path, each: impl FnMut(&StoredEvent<'_>)) -> anyhow::Result<Vec<SegmentInfo>> {
    let bar = progress_bar(dir)?;
    let infos = scan_log(dir, each, |bytes| bar.inc(bytes));
    bar.finish_and_clear();
    Ok(infos?)
}

/// A bar over the segments' bytes on a terminal; hidden in a pipe.
fn progress_bar(dir: &Path) -> anyhow::Result<ProgressBar> {
    let total: u64 = list_segments(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("a valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    Ok(bar)
}

fn seconds(us: u64) -> String {
    if us == 0 {
        "-".to_owned()
    } else {
        format!("{:.6}", us as f64 / 1e6)
    }
}
