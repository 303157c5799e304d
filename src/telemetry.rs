//! Logs: `tracing`, human-readable on a terminal, JSON when asked (or when
//! stderr is not a terminal). Secrets never reach a log line: the types
//! that hold them print masks.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::config::LogFormat;

/// Crates whose debug and trace output carries request and response bodies
/// or query parameters (container env, registry auth): they log at info at
/// most, whatever `RUST_LOG` says, so secrets never reach a log line.
const CAPPED: &[&str] = &["bollard", "hyper", "hyper_util", "tokio_postgres"];

/// `RUST_LOG`'s filter with [`CAPPED`] held at info when it asks for more.
pub fn filter(spec: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    if filter
        .max_level_hint()
        .is_none_or(|l| l > LevelFilter::INFO)
    {
        for target in CAPPED {
            if let Ok(cap) = format!("{target}=info").parse() {
                filter = filter.add_directive(cap);
            }
        }
    }
    filter
}

/// Installs the global subscriber with `filter` (`RUST_LOG`, checked by
/// `config`). A second call (tests) leaves the first in place.
pub fn init(format: LogFormat, filter: &str) {
    let filter = self::filter(filter);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crates_that_log_bodies_stay_at_info_when_debug_is_asked_for() {
        for spec in ["debug", "trace", "info,bollard=trace,tokio_postgres=debug"] {
            let shown = filter(spec).to_string();
            for target in CAPPED {
                assert!(shown.contains(&format!("{target}=info")), "{spec}: {shown}");
            }
            assert!(
                !shown.contains("bollard=trace") && !shown.contains("tokio_postgres=debug"),
                "{shown}"
            );
        }
        assert_eq!(filter("warn").to_string(), "warn");
    }
}
