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

/// The URL with the secret of its user info replaced by `***`, and any
/// `password=` query parameter too, so it can be printed: the password of
/// `user:password@` (the user stays, for the operator), or a user alone,
/// which can be a token (`https://<token>@host/`). Without a scheme, a
/// `user@` before the first `/` (an scp-like ssh prefix, or a URL typed
/// without its scheme) is user info too, and a libpq key=value string
/// (`host=db password=s3cret`, which the error for a value that is no URL
/// repeats) has its password keywords masked. A password typed with an
/// `@`, `/`, `?` or `#` unencoded (which ends the user info or the
/// authority for a URL parser) is still masked: after `user:`, up to the
/// last `@`, more than the password when a path holds an `@` too, never
/// less.
pub fn mask_url(raw: &str) -> String {
    // A libpq key=value string starts with a keyword and `=`.
    let keyword = raw.split_once('=').map(|(k, _)| k.trim());
    let scheme_end = scheme_end(raw);
    if scheme_end.is_none()
        && keyword.is_some_and(|k| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    {
        return mask_keyword_password(raw);
    }
    let mut out = raw.to_string();
    let rest_start = scheme_end.unwrap_or(0);
    let authority_end = out[rest_start..]
        .find(['/', '?', '#'])
        .map_or(out.len(), |i| rest_start + i);
    let head = &out[rest_start..authority_end];
    let last_at = out[rest_start..].rfind('@');
    if let Some(colon) = head.find(':')
        && let Some(at) = last_at.filter(|at| *at > colon)
    {
        out.replace_range(rest_start + colon + 1..rest_start + at, "***");
    } else if let Some(at) = head.rfind('@') {
        out.replace_range(rest_start..rest_start + at, "***");
    }
    if scheme_end.is_none() {
        return mask_keyword_password(&out);
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_password_key(k) => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{base}{}", masked.join("&"));
    }
    out
}

/// Where the `scheme://` a URL starts with ends (a scheme is a letter,
/// then letters, digits, `+`, `-` or `.`); `None` without one.
fn scheme_end(raw: &str) -> Option<usize> {
    let at = raw.find("://")?;
    let scheme = &raw[..at];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(at + 3)
}

/// libpq's parameters that hold a secret: the password, and the
/// passphrase of the client's key.
fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// Masks the value of each `password = …` (and `sslpassword = …`) keyword
/// of a libpq key=value string, quoted (`'a\'b'`: libpq escapes with a
/// backslash) or bare.
fn mask_keyword_password(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.to_ascii_lowercase().find("password") {
        let starts_word = at == 0
            || rest[..at].ends_with(char::is_whitespace)
            || (rest[..at].to_ascii_lowercase().ends_with("ssl")
                && (at == 3 || rest[..at - 3].ends_with(char::is_whitespace)));
        let after = &rest[at + "password".len()..];
        let trimmed = after.trim_start();
        if !starts_word || !trimmed.starts_with('=') {
            out.push_str(&rest[..at + "password".len()]);
            rest = after;
            continue;
        }
        let value = trimmed[1..].trim_start();
        out.push_str(&rest[..rest.len() - value.len()]);
        out.push_str("***");
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + end
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    out.push_str(rest);
    out
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
    fn mask_url_hides_the_password_of_a_key_value_connection_string() {
        assert_eq!(
            mask_url("host=127.0.0.1 port=5432 user=berth password=KVsecret77 dbname=postgres"),
            "host=127.0.0.1 port=5432 user=berth password=*** dbname=postgres"
        );
        assert_eq!(
            mask_url("password = 'it\\'s secret' host=db"),
            "password = *** host=db"
        );
        assert_eq!(mask_url("PASSWORD=x"), "PASSWORD=***");
        assert_eq!(
            mask_url("host=db sslpassword=kp1 user=u"),
            "host=db sslpassword=*** user=u"
        );
        assert_eq!(mask_url("host=db mypassword=y"), "host=db mypassword=y");
    }

    #[test]
    fn mask_url_hides_a_user_alone_and_the_password_of_a_user() {
        assert_eq!(
            mask_url("https://tok-123@git.example/org/tpl-"),
            "https://***@git.example/org/tpl-"
        );
        assert_eq!(
            mask_url("https://bob:pw-456@git.example:3000/org/tpl-"),
            "https://bob:***@git.example:3000/org/tpl-"
        );
        assert_eq!(
            mask_url("postgres://berth:s3cret@db:5432/berth"),
            "postgres://berth:***@db:5432/berth"
        );
        assert_eq!(
            mask_url("ssh://git@git.example/org/tpl-"),
            "ssh://***@git.example/org/tpl-"
        );
        assert_eq!(
            mask_url("git@git.example:org/tpl-"),
            "***@git.example:org/tpl-"
        );
        assert_eq!(
            mask_url("tok-123@git.example/org/tpl-"),
            "***@git.example/org/tpl-"
        );
    }

    #[test]
    fn mask_url_hides_a_password_typed_with_a_character_that_ends_the_authority() {
        for (raw, shown) in [
            (
                "postgres://berth:s3cr#et@db.internal:5432/berth",
                "postgres://berth:***@db.internal:5432/berth",
            ),
            ("postgres://u:pa/ss@db/berth", "postgres://u:***@db/berth"),
            ("postgres://u:pa?ss@db/berth", "postgres://u:***@db/berth"),
            ("postgres://u:12/34@db/berth", "postgres://u:***@db/berth"),
            ("u:pa/ss@db/berth", "u:***@db/berth"),
            ("postgres://u:p@ss/w0rd@db/x", "postgres://u:***@db/x"),
            ("postgres://u:p@ss@db:5432/x", "postgres://u:***@db:5432/x"),
            (
                "host=db password=p@ss user=u",
                "host=db password=*** user=u",
            ),
            ("hostaddr=::1 password=a/b@c", "hostaddr=::1 password=***"),
            (
                "postgres://h/db?sslpassword=kp1&password=pw2",
                "postgres://h/db?sslpassword=***&password=***",
            ),
        ] {
            assert_eq!(mask_url(raw), shown, "{raw}");
        }
    }

    proptest::proptest! {
        /// Whatever a password holds unencoded, none of it shows, in a URL
        /// or a key=value string (the `Zq` it starts with is nowhere else).
        #[test]
        fn mask_url_never_shows_a_password(
            password in "Zq[a-zA-Z0-9#/?@%!:=&]{0,20}",
            query in proptest::option::of("[a-z]{1,6}=[a-z0-9]{0,6}"),
        ) {
            let query = query.map_or(String::new(), |q| format!("?{q}"));
            for raw in [
                format!("postgres://berth:{password}@db.internal:5432/berth{query}"),
                format!("https://bob:{password}@git.example/org/tpl-"),
                format!("berth:{password}@db/berth"),
                format!("host=db password={password}"),
                format!("postgres://db/berth?password={password}"),
            ] {
                let shown = mask_url(&raw);
                proptest::prop_assert!(!shown.contains(&password), "{raw} → {shown}");
            }
        }
    }

    #[test]
    fn a_database_url_with_a_hash_is_refused_as_it_would_connect_elsewhere() {
        let refused = database_url("postgres://u:x@127.0.0.1:5432/a#z/w?v@10.9.9.9:5432/b");
        assert!(refused.is_err_and(|e| e.contains("%23")));
        assert!(database_url("postgres://u:x%23y@127.0.0.1:5432/a").is_ok());
    }

    #[test]
    fn mask_url_leaves_urls_without_user_info_and_paths_alone() {
        for raw in [
            "https://git.example/org/tpl-",
            "https://git.example/org@2/tpl-",
            "/srv/git/user@host/tpl-",
            "file:///srv/git/tpl-",
        ] {
            assert_eq!(mask_url(raw), raw);
        }
        assert_eq!(
            mask_url("postgres://h/db?password=x&sslmode=disable"),
            "postgres://h/db?password=***&sslmode=disable"
        );
    }
}
