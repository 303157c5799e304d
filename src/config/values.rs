//! Parsers for single setting values. Each returns a message naming what
//! was expected; the caller adds the setting's name and value.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::config::SecretUrl;
use crate::model::{DeleteGuard, Platform, Secret};

/// A duration as the operator writes it (`30d`, `1h 30m`): humantime's
/// form with its day unit shortened, as `--help` shows the defaults.
pub fn fmt_duration(d: &Duration) -> String {
    humantime::format_duration(*d)
        .to_string()
        .split(' ')
        .map(|part| {
            match part
                .strip_suffix("days")
                .or_else(|| part.strip_suffix("day"))
            {
                Some(n) => format!("{n}d"),
                None => part.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The longest duration a setting takes: ten years, far beyond any
/// sensible interval, and far enough below the clock types' range that
/// adding it to now never overflows.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw)
        .map_err(|e| format!("not a duration ({e}); use forms like 30s, 5m, 1h30m, 30d"))?;
    if d > LONGEST {
        return Err("longer than 3650d (ten years of 365 days), the most berth takes".into());
    }
    Ok(d)
}

/// The most passes berth runs at once: each holds a database connection
/// and makes engine calls, so a value in the thousands exhausts
/// PostgreSQL's connections long before it speeds anything up.
pub const MAX_CONCURRENCY: usize = 256;

pub fn concurrency(raw: &str) -> Result<usize, String> {
    match positive::<usize>(raw)? {
        n if n > MAX_CONCURRENCY => Err(format!("more than {MAX_CONCURRENCY}")),
        n => Ok(n),
    }
}

pub fn positive_duration(raw: &str) -> Result<Duration, String> {
    let d = duration(raw)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

pub fn duration_or_zero(raw: &str) -> Result<Duration, String> {
    duration(raw)
}

pub fn duration_or_off(raw: &str) -> Result<Option<Duration>, String> {
    match raw {
        "off" | "0" => Ok(None),
        _ => positive_duration(raw)
            .map(Some)
            .map_err(|e| format!("{e}, or off")),
    }
}

pub fn lease_ttl(raw: &str) -> Result<Duration, String> {
    let d = duration(raw)?;
    if d < Duration::from_secs(3) {
        return Err("must be at least 3s (the lease is renewed at a third of it)".into());
    }
    Ok(d)
}

/// Whole seconds, for the Go-era `PROVISION_TIMEOUT_SECONDS`.
pub fn seconds(raw: &str) -> Result<Duration, String> {
    match raw.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => Err("not a positive whole number of seconds".into()),
    }
}

pub fn positive<T: FromStr + PartialOrd + Default>(raw: &str) -> Result<T, String> {
    match raw.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err("not a positive whole number".into()),
    }
}

pub fn optional_positive(raw: &str) -> Result<Option<u64>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    positive::<u64>(raw).map(Some)
}

pub fn ratio(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err("not a ratio between 0 and 1".into()),
    }
}

pub fn boolean(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not a boolean (true/false, 1/0, yes/no, on/off)".into()),
    }
}

pub fn socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse()
        .map_err(|_| "not an address with a port, e.g. 127.0.0.1:9464".into())
}

pub fn host_id(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 63
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err("must be 1-63 characters of letters, digits, '.', '_' or '-'".into())
    }
}

pub fn network(raw: &str) -> Result<String, String> {
    let ok = raw.len() <= 128
        && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err("not a Docker network name (letters, digits, '.', '_', '-')".into())
    }
}

pub fn docker_host(raw: &str) -> Result<String, String> {
    if raw.starts_with("https://") {
        // berth speaks to the engine without TLS: such an endpoint would
        // only ever fail to connect, as if the engine were down.
        return Err(
            "https:// needs TLS, which berth does not speak to the engine: use the local socket (unix://) or a tcp:// endpoint on a private network".into(),
        );
    }
    let ok = ["unix://", "tcp://", "http://"]
        .iter()
        .any(|scheme| raw.starts_with(scheme) && raw.len() > scheme.len());
    if ok {
        Ok(raw.to_string())
    } else {
        Err("not a Docker endpoint: use unix:///path, tcp://host:port or http://host:port".into())
    }
}

pub fn http_url(raw: &str) -> Result<String, String> {
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Ok(raw.to_string())
        }
        _ => Err("not an http:// or https:// URL".into()),
    }
}

pub fn delete_guard(raw: &str) -> Result<DeleteGuard, String> {
    const HELP: &str = "not a removal limit: use N (a count) or N% (0-100)";
    if raw.is_empty() {
        return Ok(DeleteGuard::Default);
    }
    if let Some(p) = raw.strip_suffix('%') {
        return match p.trim().parse::<u32>() {
            Ok(p) if p <= 100 => Ok(DeleteGuard::Percent(p)),
            _ => Err(HELP.into()),
        };
    }
    raw.parse::<u32>()
        .map(DeleteGuard::Count)
        .map_err(|_| HELP.into())
}

pub fn log_format(raw: &str) -> Result<crate::config::LogFormat, String> {
    use crate::config::LogFormat;
    match raw {
        "" => Ok(LogFormat::Auto),
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be pretty or json".into()),
    }
}

pub fn log_filter(raw: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(raw)
        .map(|_| raw.to_string())
        .map_err(|e| format!("not a log filter: {e}"))
}

pub fn absolute_path(raw: &str) -> Result<PathBuf, String> {
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err("not an absolute path".into());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("must not contain '..'".into());
    }
    Ok(path.components().collect())
}

pub fn workspace_roots(raw: &str) -> Result<Vec<PathBuf>, String> {
    raw.split(':')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let root = absolute_path(part).map_err(|e| format!("{part:?} is {e}"))?;
            if root == Path::new("/") {
                return Err("\"/\" would allow every host directory".into());
            }
            Ok(root)
        })
        .collect()
}

pub fn secret(raw: &str) -> Result<Secret<String>, String> {
    Ok(Secret::new(raw.to_string()))
}

/// `host[:port]/path` in lower case, as image references need; a trailing
/// `/` is dropped.
pub fn registry_prefix(raw: &str) -> Result<String, String> {
    let prefix = raw.trim_end_matches('/');
    let ok = !prefix.contains("://")
        && prefix.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/' | ':')
        })
        && prefix.split('/').all(|part| !part.is_empty());
    if ok {
        Ok(prefix.to_string())
    } else {
        Err("not a registry prefix like ghcr.io/molecule-ai or 127.0.0.1:5000/team (no scheme, lower case)".into())
    }
}

pub fn database_url(raw: &str) -> Result<SecretUrl, String> {
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err("not a PostgreSQL URL: it must start with postgres:// or postgresql://".into());
    }
    // A URL parser ends the URL at a `#` (what follows is a fragment,
    // which a PostgreSQL URL has no use for): a `#` typed in a password
    // would cut the host and database off unseen.
    if raw.contains('#') {
        return Err(
            "a '#' ends a URL (what follows is dropped): percent-encode it as %23 in the password"
                .into(),
        );
    }
    sqlx::postgres::PgConnectOptions::from_str(raw)
        .map_err(|_| "not a valid PostgreSQL URL (postgres://user:password@host:port/database; percent-encode special characters in the password)")?;
    // berth speaks to PostgreSQL without TLS: a URL that demands it would
    // only ever fail to connect, as if the database were down.
    let query = raw.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&') {
        if let Some(mode) = pair.strip_prefix("sslmode=")
            && matches!(mode, "require" | "verify-ca" | "verify-full")
        {
            return Err(format!(
                "sslmode={mode} needs TLS, which berth does not speak to PostgreSQL: use sslmode=disable or prefer, and keep the database on a private network or behind a local tunnel"
            ));
        }
    }
    Ok(SecretUrl::new(raw))
}

/// A git URL prefix: https, ssh (`ssh://` or `user@host:`), or a local path.
pub fn repo_prefix(raw: &str) -> Result<SecretUrl, String> {
    let ok = raw.starts_with("https://")
        || raw.starts_with("http://")
        || raw.starts_with("ssh://")
        || raw.starts_with("file://")
        || raw.starts_with('/')
        || (raw.contains('@') && raw.contains(':'));
    if ok && !raw.contains(char::is_whitespace) {
        Ok(SecretUrl::new(raw))
    } else {
        Err("not a git URL prefix (https://, ssh://, user@host:, or an absolute path)".into())
    }
}

pub fn platform_value(raw: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = raw.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if ok {
        Ok(Platform(raw.to_string()))
    } else {
        Err("not a platform like linux/amd64 or linux/arm64/v8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_prints_in_a_form_it_parses_back_from() {
        for (secs, shown) in [
            (30 * 86400, "30d"),
            (86400 + 3600, "1d 1h"),
            (90, "1m 30s"),
            (600, "10m"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(fmt_duration(&d), shown);
            assert_eq!(humantime::parse_duration(shown).unwrap(), d);
        }
    }

    #[test]
    fn a_database_url_with_a_hash_is_refused_as_it_would_connect_elsewhere() {
        let refused = database_url("postgres://u:x@127.0.0.1:5432/a#z/w?v@10.9.9.9:5432/b");
        assert!(refused.is_err_and(|e| e.contains("%23")));
        assert!(database_url("postgres://u:x%23y@127.0.0.1:5432/a").is_ok());
    }
}
