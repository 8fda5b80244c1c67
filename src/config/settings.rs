//! What a setting is: its TOML key, environment variable, default, help, the values it accepts
//! and how its value is read. The rows themselves are in `table.rs`; defaults, the file, the
//! environment, `Debug`, `mcplog serve --help` and the README's settings table all derive from
//! them, so a setting (or its range) cannot change in one and be forgotten in another.
//!
//! Hand-written rather than clap's `env` attribute or a layering crate: the reference design's
//! file needs shims (`reference.rs`) that neither models, and static keys must never reach an
//! error message, which is simplest to guarantee where every message is made here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{parse_duration, Config, LogFormat};

/// Where a setting's value lives in [`Config`], what kind of value it is, and for numbers and
/// durations the values it accepts (`None`: any of its kind).
pub(super) enum Field {
    Path(fn(&mut Config) -> &mut PathBuf),
    Text(fn(&mut Config) -> &mut String),
    /// Never shown: `Debug` and errors say only whether it is set.
    Secret(fn(&mut Config) -> &mut Option<String>),
    /// Secrets, never shown (`Debug` says how many): a TOML list of strings, or text with the
    /// entries separated by commas (the environment's form).
    SecretList(fn(&mut Config) -> &mut Vec<String>),
    Count(fn(&mut Config) -> &mut u64, Option<Numbers>),
    Size(fn(&mut Config) -> &mut usize, Option<Numbers>),
    /// A count that may be absent (no limit).
    Limit(fn(&mut Config) -> &mut Option<u64>),
    Duration(fn(&mut Config) -> &mut Duration, Option<Durations>),
    Flag(fn(&mut Config) -> &mut bool),
    Level,
    Format,
    /// `always`, the only mode: accepted so that a file may say it.
    Fsync,
}

/// The whole numbers a setting accepts, both ends included.
#[derive(Clone, Copy)]
pub(super) struct Numbers {
    pub min: u64,
    /// `None`: no ceiling but the type's.
    pub max: Option<u64>,
    /// What is counted, plural: `bytes`, `events`, ...
    pub unit: &'static str,
}

/// The durations a setting accepts, both ends included.
#[derive(Clone, Copy)]
pub(super) struct Durations {
    pub min: Duration,
    /// `None`: no ceiling.
    pub max: Option<Duration>,
}

/// One setting.
pub struct Setting {
    /// Its section in the TOML file.
    pub section: &'static str,
    /// Its key in that section.
    pub name: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The embedded default, as text (`None`: unset).
    pub default: Option<&'static str>,
    /// What it does.
    pub help: &'static str,
    pub(super) field: Field,
    /// Its current value as `Debug` shows it.
    pub(super) show: fn(&Config) -> String,
}

/// Log levels, as the settings take them.
const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

impl Setting {
    /// `section.name`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// The values it accepts, as `--help` and the README's settings table show them (`None`:
    /// any of its kind; relations to other settings are in `Config::check`).
    pub fn range(&self) -> Option<String> {
        match &self.field {
            Field::Count(_, Some(numbers)) | Field::Size(_, Some(numbers)) => {
                Some(numbers.to_string())
            }
            Field::Duration(_, Some(durations)) => Some(durations.to_string()),
            _ => None,
        }
    }

    /// Sets the value from text (an environment variable or a TOML string).
    pub(super) fn set(&self, config: &mut Config, text: &str) -> Result<(), String> {
        match &self.field {
            Field::Path(f) => *f(config) = PathBuf::from(text),
            Field::Text(f) => *f(config) = text.to_owned(),
            // Set but empty is a mistake (a variable exported without its value): unset means
            // none, so an empty one is refused rather than sent as a credential.
            Field::Secret(_) if text.trim().is_empty() => {
                return Err("is empty (leave it unset if there is none)".to_owned())
            }
            Field::Secret(f) => *f(config) = Some(text.to_owned()),
            Field::SecretList(f) => *f(config) = secret_list(text),
            Field::Count(f, _) => *f(config) = self.count(text)?,
            Field::Size(f, _) => *f(config) = self.size(text)?,
            Field::Limit(f) => *f(config) = Some(number(text)?),
            Field::Duration(f, _) => *f(config) = self.duration(text)?,
            Field::Flag(f) => *f(config) = flag(text)?,
            Field::Level => config.logging.level = level(text)?,
            Field::Format => config.logging.format = log_format(text)?,
            Field::Fsync => fsync(text)?,
        }
        Ok(())
    }

    /// A count, within this setting's range.
    pub(super) fn count(&self, text: &str) -> Result<u64, String> {
        let (Field::Count(_, numbers) | Field::Size(_, numbers)) = &self.field else {
            return Err(format!("{} is not a count", self.key()));
        };
        let n = number(text)?;
        match numbers {
            Some(numbers) if !numbers.contains(n) => Err(format!("must be {numbers}, not {n}")),
            _ => Ok(n),
        }
    }

    /// A size in memory, within this setting's range.
    pub(super) fn size(&self, text: &str) -> Result<usize, String> {
        usize::try_from(self.count(text)?).map_err(|_| "too large".to_owned())
    }

    /// A duration, within this setting's range.
    pub(super) fn duration(&self, text: &str) -> Result<Duration, String> {
        let Field::Duration(_, durations) = &self.field else {
            return Err(format!("{} is not a duration", self.key()));
        };
        let d = parse_duration(text)?;
        match durations {
            Some(durations) if !durations.contains(d) => {
                Err(format!("must be {durations}, not {}", show_duration(d)))
            }
            _ => Ok(d),
        }
    }

    /// The embedded default, read by `read` as a value from the file or the environment is.
    /// Panics if there is none or it is refused: the table is wrong (a test reads every one).
    pub(super) fn default_as<T>(&self, read: impl FnOnce(&str) -> Result<T, String>) -> T {
        let text = self
            .default
            .unwrap_or_else(|| panic!("{} has no default", self.key()));
        read(text).unwrap_or_else(|err| panic!("the default of {}: {err}", self.key()))
    }

    /// Sets the value from a TOML value: text fields take strings, numbers and durations take
    /// numbers too (a duration as seconds), flags take booleans.
    pub(super) fn set_toml(&self, config: &mut Config, value: &toml::Value) -> Result<(), String> {
        if let (Field::SecretList(f), toml::Value::Array(items)) = (&self.field, value) {
            // The value is never quoted back: it is a secret.
            *f(config) = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| "must be a list of strings".to_owned())?;
            return Ok(());
        }
        let textual = matches!(
            self.field,
            Field::Path(_)
                | Field::Text(_)
                | Field::Secret(_)
                | Field::SecretList(_)
                | Field::Level
                | Field::Format
                | Field::Fsync
        );
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) if !textual && *n >= 0 => n.to_string(),
            toml::Value::Boolean(b) if matches!(self.field, Field::Flag(_)) => b.to_string(),
            _ if matches!(self.field, Field::SecretList(_)) => {
                return Err("must be a list of strings".to_owned())
            }
            // A secret's value is never quoted back, whatever its type.
            _ if matches!(self.field, Field::Secret(_)) => {
                return Err("must be a string (its value is not shown: it is a secret)".to_owned())
            }
            other if textual => return Err(format!("{other} is not a string")),
            other => return Err(format!("{other} is not a value of this setting")),
        };
        self.set(config, &text)
    }

    /// The current value as `Debug` shows it; a secret only as set or not.
    pub(super) fn shown(&self, config: &Config) -> String {
        match self.field {
            Field::Secret(field) if field(&mut config.clone()).is_some() => "<set>".to_owned(),
            Field::Secret(_) => "None".to_owned(),
            Field::SecretList(field) => format!("<{} set>", field(&mut config.clone()).len()),
            _ => (self.show)(config),
        }
    }
}

impl Numbers {
    fn contains(&self, n: u64) -> bool {
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }
}

impl Durations {
    fn contains(&self, d: Duration) -> bool {
        d >= self.min && self.max.is_none_or(|max| d <= max)
    }
}

impl fmt::Display for Numbers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(max) => write!(f, "{} to {max} {}", self.min, self.unit),
            None => write!(f, "{} or more {}", self.min, self.unit),
        }
    }
}

impl fmt::Display for Durations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let min = show_duration(self.min);
        match self.max {
            Some(max) if self.min.is_zero() => write!(f, "at most {}", show_duration(max)),
            Some(max) => write!(f, "{min} to {}", show_duration(max)),
            None => write!(f, "{min} or more"),
        }
    }
}

/// A duration as a setting is written: in the largest of `d`, `h`, `m`, `s` and `ms` that
/// divides it.
pub(super) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    match units
        .iter()
        .find(|(per, _)| ms > 0 && ms.is_multiple_of(*per))
    {
        Some((per, unit)) => format!("{}{unit}", ms / per),
        None => format!("{ms}ms"),
    }
}

fn number(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("{text:?} is not a whole number"))
}

/// Comma-separated entries, each trimmed; empty ones dropped.
fn secret_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn flag(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

pub(super) fn level(text: &str) -> Result<String, String> {
    let level = text.trim().to_ascii_lowercase();
    if !LEVELS.contains(&level.as_str()) {
        return Err(format!("{level:?} is not {}", LEVELS.join(", ")));
    }
    Ok(level)
}

pub(super) fn log_format(text: &str) -> Result<LogFormat, String> {
    match text.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{other:?} is not text or json")),
    }
}

fn fsync(text: &str) -> Result<(), String> {
    if text.trim() != "always" {
        return Err(format!(
            "{text:?} is not supported: only \"always\" (acknowledge after fdatasync)"
        ));
    }
    Ok(())
}

/// The settings as `mcplog serve --help` lists them: variable, default, meaning and range.
pub fn help() -> String {
    let mut out = String::from(
        "Settings: embedded defaults, then the --config file ([section] key), then these \
         environment variables, then flags.\n\n",
    );
    let default = |s: &Setting| s.default.unwrap_or("(unset)");
    // Columns as wide as their longest entry, so every line's fields start at the same place.
    let env_width = super::SETTINGS
        .iter()
        .map(|s| s.env.len())
        .max()
        .unwrap_or(0);
    let default_width = super::SETTINGS
        .iter()
        .map(|s| default(s).len())
        .max()
        .unwrap_or(0);
    for s in super::SETTINGS {
        let range = s.range().map(|r| format!(" ({r})")).unwrap_or_default();
        out.push_str(&format!(
            "  {:<env_width$} {:<default_width$} {}{range}\n",
            s.env,
            default(s),
            s.help
        ));
    }
    out
}
