//! The `mcplog` binary: command-line glue over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcplog::auth::{self, Role};
use mcplog::config::{parse_duration, Config, LogFormat};

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
    /// Settings come from embedded defaults, then the --config file, then environment variables,
    /// then flags.
    #[command(after_long_help = mcplog::config::help())]
    Serve {
        /// A TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (segments, keys).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on, HOST:PORT (port 0 picks a free one).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Mint a signed API key and print it alone on stdout.
    Keygen {
        /// A TOML configuration file (for the master secret and key_lifetime_max).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory holding the generated master secret.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The mcp_id the key is bound to (required for writer keys).
        #[arg(long)]
        mcp_id: Option<String>,
        /// writer, auditor or admin.
        #[arg(long, default_value = "writer")]
        role: String,
        /// Lifetime, such as 24h or 30d; at most key_lifetime_max, which is also the default.
        #[arg(long)]
        expires_in: Option<String>,
        /// Print {"key", "key_id", "role", "mcp_id", "expires_at"} as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config_file, data_dir, bind) = match &cli.command {
        Command::Serve {
            config,
            data_dir,
            bind,
        } => (config.clone(), data_dir.clone(), bind.clone()),
        Command::Keygen {
            config, data_dir, ..
        } => (config.clone(), data_dir.clone(), None),
    };
    let (config, warnings) = match load_config(config_file.as_deref(), data_dir, bind) {
        Ok(loaded) => loaded,
        Err((code, message)) => {
            // Logging is configured by the file that failed: say it plainly on stderr.
            eprintln!("mcplog: {message}");
            return ExitCode::from(code);
        }
    };
    init_logging(&config);
    for warning in warnings {
        tracing::warn!("config: {warning}");
    }
    let result = match cli.command {
        Command::Serve { .. } => serve(&config),
        Command::Keygen {
            mcp_id,
            role,
            expires_in,
            json,
            ..
        } => keygen(
            &config,
            mcp_id.as_deref(),
            &role,
            expires_in.as_deref(),
            json,
        ),
    };
    result.unwrap_or_else(|(code, message)| {
        tracing::error!("{message}");
        ExitCode::from(code)
    })
}

type Failure = (u8, String);

fn init_logging(config: &Config) {
    let level = match config.logging.level.as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level);
    match config.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Defaults, then the file, then the environment, then flags. Returns the file's warnings.
fn load_config(
    file: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    bind: Option<String>,
) -> Result<(Config, Vec<String>), Failure> {
    let mut config = Config::default();
    let mut warnings = Vec::new();
    if let Some(path) = file {
        warnings = config
            .apply_file(path)
            .map_err(|err| (2, err.to_string()))?;
        warnings = warnings
            .into_iter()
            .map(|w| format!("{}: {w}", path.display()))
            .collect();
    }
    // A setting's variable that is not UTF-8 would otherwise be read as unset, leaving the
    // default (or the file's value) in force while the operator believes it set.
    for setting in mcplog::config::SETTINGS {
        if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(setting.env) {
            return Err((
                2,
                format!(
                    "configuration key {}: is not UTF-8 (its value is not shown)",
                    setting.env
                ),
            ));
        }
    }
    config
        .apply_env(|name| std::env::var(name).ok())
        .map_err(|err| (2, err.to_string()))?;
    config.storage.data_dir = data_dir.unwrap_or(config.storage.data_dir);
    config.api.bind = bind.unwrap_or(config.api.bind);
    // Once, on the final layers: a variable or flag may fix what the file alone gets wrong.
    config.check().map_err(|err| (2, err.to_string()))?;
    Ok((config, warnings))
}

fn serve(config: &Config) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(mcplog::server::run(
        config,
        mcplog::server::shutdown_signal(),
        |_| {},
    ));
    // Connections the drain closed may leave tasks behind: they are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
        .map(|()| ExitCode::SUCCESS)
        .map_err(|err| (1, err.to_string()))
}

fn keygen(
    config: &Config,
    mcp_id: Option<&str>,
    role: &str,
    expires_in: Option<&str>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let role = Role::from_name(role).ok_or_else(|| {
        (
            2,
            format!("--role {role:?} is not writer, auditor or admin"),
        )
    })?;
    let mcp_id = match (mcp_id, role) {
        (None, Role::Writer) => return Err((2, "a writer key needs --mcp-id".to_owned())),
        (None, _) => "",
        (Some(id), _) => id,
    };
    if !mcp_id.is_empty() || role == Role::Writer {
        // A key for an mcp_id no event could carry would never write.
        mcplog::event::check_id("--mcp-id", mcp_id, mcplog::event::ID_BYTES_MAX)
            .map_err(|invalid| (2, invalid.message))?;
    }
    if role == Role::Writer && mcp_id == mcplog::event::REVOCATIONS_MCP_ID {
        return Err((
            2,
            format!("--mcp-id {mcp_id:?} is reserved for the server's revocation records: a writer key for it could write nothing"),
        ));
    }
    let lifetime = match expires_in {
        Some(text) => {
            parse_duration(text).map_err(|message| (2, format!("--expires-in: {message}")))?
        }
        None => config.keys.key_lifetime_max,
    };
    if lifetime > config.keys.key_lifetime_max || lifetime.is_zero() {
        return Err((
            2,
            format!(
                "--expires-in {lifetime:?} must be above zero and at most key_lifetime_max ({:?})",
                config.keys.key_lifetime_max
            ),
        ));
    }
    // Resolved exactly as the server resolves it, without creating one.
    let masters = auth::master_secrets(
        config.keys.master_secret.as_deref(),
        &config.keys.previous_master_secrets,
        &config.storage.data_dir,
        auth::SecretFile::Read,
    )
    .map_err(|err| (2, err.to_string()))?;
    let expires_at =
        (mcplog::clock::now_us() / 1_000_000).saturating_add(lifetime.as_secs().max(1));
    let key = auth::mint(&masters.current, role, mcp_id, expires_at)
        .map_err(|err| (1, err.to_string()))?;
    let key_id = auth::hex(&auth::key_id(&key));
    if json {
        let out = serde_json::json!({
            "key": key, "key_id": key_id, "role": role.as_str(),
            "mcp_id": (!mcp_id.is_empty()).then_some(mcp_id), "expires_at": expires_at,
        });
        println!("{out}");
    } else {
        println!("{key}");
        eprintln!(
            "key_id {key_id}, role {}, expires_at {expires_at} (Unix seconds)",
            role.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}
