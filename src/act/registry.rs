//! Backoff per registry host: a registry that answers 429 (rate limit) or
//! 401/403 (credentials refused) is left alone for a while by every
//! workspace, not retried by each on its own schedule.
//!
//! The first refusal opens a window of [`INITIAL`]; each refusal after it
//! doubles the window up to [`MAX`], with jitter so hosts sharing a
//! registry drift apart. While the window is open every request for that
//! registry fails at once with the refusal it had (the rows keep their
//! reason), and nothing reaches the registry. When it closes, exactly one
//! request goes through as a probe — the window is pushed out again while
//! it is in flight — and its answer either clears the entry or widens the
//! window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::ActError;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

/// Why a registry is being left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    RateLimited,
    Auth,
}

#[derive(Debug)]
struct Entry {
    refusal: Refusal,
    /// The registry's own words, for the rows.
    message: String,
    /// The current window.
    delay: Duration,
    /// No request before this.
    until: Instant,
    /// Refusals in a row.
    count: u32,
}

/// The registries in backoff, by host. Shared by every clone of the
/// executor.
#[derive(Debug, Default)]
pub struct Registries {
    by_host: Mutex<HashMap<String, Entry>>,
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

impl Registries {
    /// Whether a request for `image` on `host` may go out now; an error
    /// names the refusal and when the registry is asked again. Admitting a
    /// probe holds the window open for everyone else until it answers.
    pub fn admit(&self, host: &str, image: &str) -> Result<(), ActError> {
        let mut map = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = map.get_mut(host) else {
            return Ok(());
        };
        let now = Instant::now();
        if now < entry.until {
            let wait = entry.until - now;
            let message = format!(
                "registry {host} refused {} time(s) ({}); berth asks it again in {}s",
                entry.count,
                entry.message,
                wait.as_secs().max(1)
            );
            return Err(match entry.refusal {
                Refusal::RateLimited => ActError::RegistryRateLimited {
                    image: image.to_string(),
                    message,
                },
                Refusal::Auth => ActError::RegistryAuth {
                    image: image.to_string(),
                    message,
                },
            });
        }
        // This request is the probe.
        entry.until = now + entry.delay;
        Ok(())
    }

    /// Takes the answer a request for `host` got.
    pub fn answered(&self, host: &str, result: Result<(), &ActError>) {
        let refusal = match result {
            Err(ActError::RegistryRateLimited { message, .. }) => {
                Some((Refusal::RateLimited, message))
            }
            Err(ActError::RegistryAuth { message, .. }) => Some((Refusal::Auth, message)),
            // Not found, timeouts and engine errors say nothing about the
            // registry's patience.
            Err(_) => return,
            Ok(()) => None,
        };
        let mut map = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        let Some((refusal, message)) = refusal else {
            if map.remove(host).is_some() {
                tracing::info!(registry = host, "registry answers again; backoff cleared");
            }
            return;
        };
        let now = Instant::now();
        let entry = map.entry(host.to_string()).or_insert(Entry {
            refusal,
            message: String::new(),
            delay: Duration::ZERO,
            until: now,
            count: 0,
        });
        entry.refusal = refusal;
        entry.message = message.chars().take(200).collect();
        entry.count += 1;
        entry.delay = if entry.delay.is_zero() {
            INITIAL
        } else {
            (entry.delay * 2).min(MAX)
        };
        entry.until = now + jittered(entry.delay);
        tracing::warn!(
            registry = host,
            refusal = ?refusal,
            times = entry.count,
            backoff_s = entry.delay.as_secs(),
            "registry refused; every request to it waits"
        );
    }

    /// Registries in backoff now, by refusal (for the metrics).
    pub fn count(&self, refusal: Refusal) -> usize {
        let map = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|e| e.refusal == refusal).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> ActError {
        ActError::RegistryRateLimited {
            image: "r/x:latest".into(),
            message: "toomanyrequests: slow down".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_closes_the_registry_for_everyone_then_one_probe_goes() {
        let r = Registries::default();
        assert!(r.admit("reg:5000", "a").is_ok());
        r.answered("reg:5000", Err(&limited()));
        let refused = r.admit("reg:5000", "b").unwrap_err();
        assert_eq!(refused.kind(), "registry_rate_limited");
        assert!(refused.to_string().contains("toomanyrequests"));
        assert!(
            r.admit("other:5000", "c").is_ok(),
            "other registries are not held"
        );

        tokio::time::advance(INITIAL.mul_f64(1.11)).await;
        assert!(r.admit("reg:5000", "probe").is_ok(), "the window closed");
        assert!(
            r.admit("reg:5000", "d").is_err(),
            "one probe at a time while it is in flight"
        );
        r.answered("reg:5000", Ok(()));
        assert!(r.admit("reg:5000", "e").is_ok(), "success clears the entry");
    }

    #[tokio::test(start_paused = true)]
    async fn windows_double_up_to_the_maximum() {
        let r = Registries::default();
        for _ in 0..10 {
            r.answered("reg", Err(&limited()));
        }
        let map = r.by_host.lock().unwrap();
        assert_eq!(map["reg"].delay, MAX);
        assert_eq!(map["reg"].count, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn auth_refusals_keep_their_reason_and_other_errors_change_nothing() {
        let r = Registries::default();
        r.answered(
            "ghcr.io",
            Err(&ActError::RegistryAuth {
                image: "x".into(),
                message: "denied".into(),
            }),
        );
        assert_eq!(r.admit("ghcr.io", "y").unwrap_err().kind(), "registry_auth");
        r.answered(
            "quiet",
            Err(&ActError::ImageNotFound {
                image: "x".into(),
                message: "no such manifest".into(),
            }),
        );
        assert!(r.admit("quiet", "y").is_ok());
        assert_eq!(r.count(Refusal::Auth), 1);
        assert_eq!(r.count(Refusal::RateLimited), 0);
    }
}
