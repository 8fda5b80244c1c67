//! The `mcplog` binary: command-line glue over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mcplog: the interaction log of an MCP coordinator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    ///
    /// Defaults are embedded (data in ./data, 127.0.0.1:8080). Environment variables override them:
    /// MCPLOG_DATA_DIR, MCPLOG_BIND, MCPLOG_SEGMENT_MAX_BYTES, MCPLOG_SEGMENT_MAX_AGE,
    /// MCPLOG_EVENT_BYTES_MAX, MCPLOG_BATCH_EVENTS_MAX, MCPLOG_BATCH_BYTES_MAX,
    /// MCPLOG_QUEUE_EVENTS_MAX; flags override those.
    Serve {
        /// Data directory (segments, keys).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on, HOST:PORT (port 0 picks a free one).
        #[arg(long)]
        bind: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve { data_dir, bind } => serve(data_dir, bind),
    }
}

fn serve(data_dir: Option<PathBuf>, bind: Option<String>) -> ExitCode {
    let mut config = mcplog::config::Config::default();
    if let Err(err) = config.apply_env(|name| std::env::var(name).ok()) {
        tracing::error!("{err}");
        return ExitCode::from(2);
    }
    config.data_dir = data_dir.unwrap_or(config.data_dir);
    config.bind = bind.unwrap_or(config.bind);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(mcplog::server::run(
        &config,
        mcplog::server::shutdown_signal(),
        |_| {},
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}
