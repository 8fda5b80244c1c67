//! `[static_api_keys]` entries: a key with its mcp_id, role, expiry and whether it is disabled.
//! Errors name a key by its fingerprint, never by the key.

use crate::auth::{Role, StaticKey};
use crate::ratelimit::Quota;

use super::{reference, ConfigError};

/// Longest static key, in bytes: it must fit an `Authorization` header.
const STATIC_KEY_BYTES_MAX: usize = 1024;

/// One `[static_api_keys]` entry, and its own rate limit if it sets one. `shown` names it by
/// fingerprint: errors never carry the key.
pub(super) fn static_key(
    key: &str,
    entry: &toml::Table,
    shown: &str,
) -> Result<(StaticKey, Option<Quota>), ConfigError> {
    let bad = |field: &str, message: String| ConfigError {
        key: format!("{shown}.{field}"),
        message,
    };
    check_key(key).map_err(|message| ConfigError {
        key: shown.to_owned(),
        message,
    })?;
    let mut parsed = StaticKey {
        key: key.to_owned(),
        mcp_id: None,
        role: Role::Writer,
        expires_at: None,
        disabled: false,
    };
    let (mut events_per_second, mut burst) = (None, None);
    for (field, value) in entry {
        match field.as_str() {
            "events_per_second" => {
                events_per_second = Some(count(value).map_err(|m| bad(field, m))?)
            }
            "burst" => burst = Some(count(value).map_err(|m| bad(field, m))?),
            _ => key_field(&mut parsed, field, value).map_err(|m| bad(field, m))?,
        }
    }
    if parsed.role == Role::Writer && parsed.mcp_id.is_none() {
        return Err(bad("mcp_id", "a writer key needs an mcp_id".into()));
    }
    if let Some(mcp_id) = &parsed.mcp_id {
        crate::event::check_id("mcp_id", mcp_id, crate::event::ID_BYTES_MAX)
            .map_err(|invalid| bad("mcp_id", invalid.message))?;
    }
    let quota = match (events_per_second, burst) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(bad(
                "burst",
                "a burst needs events_per_second beside it".into(),
            ))
        }
        (Some(rate), burst) => {
            Some(Quota::new(rate, burst).map_err(|m| bad("events_per_second", m))?)
        }
    };
    Ok((parsed, quota))
}

/// A key travels as a bearer token: printable ASCII, no white space (a key that differs from
/// another only in white space would be the same key once a client trims it), and no quote or
/// backslash (an error answer quoting it would escape it past the key check).
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.len() > STATIC_KEY_BYTES_MAX
        || !key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(format!(
            "a static key must be 1 to {STATIC_KEY_BYTES_MAX} printable ASCII characters without white space, quotes or backslashes"
        ));
    }
    Ok(())
}

/// Sets one field of an entry other than its rate limit on `parsed`.
fn key_field(parsed: &mut StaticKey, field: &str, value: &toml::Value) -> Result<(), String> {
    let text = || value.as_str().ok_or_else(|| "must be a string".to_owned());
    match field {
        "mcp_id" => parsed.mcp_id = Some(text()?.to_owned()),
        "role" => {
            let name = text()?;
            parsed.role = Role::from_name(name)
                .ok_or_else(|| format!("{name:?} is not writer, auditor or admin"))?;
        }
        "expires_at" => {
            parsed.expires_at =
                Some(epoch_seconds(value).ok_or_else(|| {
                    format!("{value} is not Unix seconds or an RFC 3339 date-time")
                })?)
        }
        "disabled" => {
            parsed.disabled = value
                .as_bool()
                .ok_or_else(|| "must be true or false".to_owned())?
        }
        // The reference's per-key fields with no meaning here.
        name if reference::IGNORED_KEY_FIELDS.contains(&name) => {}
        _ => return Err(
            "unknown field; expected mcp_id, role, expires_at, disabled, events_per_second, burst"
                .into(),
        ),
    }
    Ok(())
}

/// A positive count of events, as a rate or a burst.
pub(super) fn count(value: &toml::Value) -> Result<u32, String> {
    value
        .as_integer()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{value} is not a whole number from 1 to {}", u32::MAX))
}

/// Unix seconds from a number, an RFC 3339 string, or a TOML offset date-time.
fn epoch_seconds(value: &toml::Value) -> Option<f64> {
    let datetime = match value {
        toml::Value::Integer(n) => return Some(*n as f64),
        toml::Value::Float(f) => return f.is_finite().then_some(*f),
        toml::Value::String(s) => s.parse::<toml::value::Datetime>().ok()?,
        toml::Value::Datetime(d) => *d,
        _ => return None,
    };
    let date = datetime.date?;
    let time = datetime.time.unwrap_or(toml::value::Time {
        hour: 0,
        minute: 0,
        second: Some(0),
        nanosecond: Some(0),
    });
    let offset_minutes = match datetime.offset {
        Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes),
        _ => 0,
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let seconds = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0))
        - offset_minutes * 60;
    Some(seconds as f64 + f64::from(time.nanosecond.unwrap_or(0)) / 1e9)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
