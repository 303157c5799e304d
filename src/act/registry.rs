//! Backoff per registry host: a registry that answers 429 (rate limit) or
//! 401/403 (credentials refused) is left alone for a while by every
//! workspace, not retried by each on its own schedule.
//!
//! The first refusal opens a window of [`INITIAL`]; each refused probe
//! doubles it up to [`MAX`], with jitter so hosts sharing a registry drift
//! apart. Refusals of requests that were already out when the first came
//! (a burst of workspaces) only refresh the message. While the window is
//! open every request for that registry fails at once with the refusal it
//! had (the rows keep their reason), and nothing reaches the registry.
//! When it closes, one request goes through as a probe (the window is
//! pushed out again while it is in flight); any answer from the registry
//! other than a refusal (the image, or "not found") clears the entry.

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
    /// A probe is out: its refusal widens the window.
    probing: bool,
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
        entry.probing = true;
        Ok(())
    }

    /// Takes the answer a request for `host` got.
    pub fn answered(&self, host: &str, result: Result<(), &ActError>) {
        let refusal = match result {
            Err(ActError::RegistryRateLimited { message, .. }) => {
                Some((Refusal::RateLimited, message))
            }
            Err(ActError::RegistryAuth { message, .. }) => Some((Refusal::Auth, message)),
            // The registry answered: it serves again.
            Err(ActError::ImageNotFound { .. }) | Ok(()) => None,
            // Timeouts and engine errors say nothing about the registry's
            // patience; a probe that ends so leaves the window as it is.
            Err(_) => {
                let mut map = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(entry) = map.get_mut(host) {
                    entry.probing = false;
                }
                return;
            }
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
            probing: false,
        });
        entry.refusal = refusal;
        entry.message = message.chars().take(200).collect();
        entry.count += 1;
        if entry.delay.is_zero() {
            entry.delay = INITIAL;
        } else if entry.probing {
            entry.delay = (entry.delay * 2).min(MAX);
        } else {
            // A request that was out before the window opened.
            return;
        }
        entry.probing = false;
        entry.until = now + jittered(entry.delay);
        tracing::warn!(
            registry = host,
            refusal = ?refusal,
            times = entry.count,
            backoff_s = entry.delay.as_secs(),
            "registry refused; every request to it waits"
        );
    }

    /// Registries whose last answer was this refusal, by refusal (for the
    /// metrics): backed off until one of their answers is not a refusal.
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
    async fn refused_probes_double_the_window_up_to_the_maximum() {
        let r = Registries::default();
        r.answered("reg", Err(&limited()));
        for _ in 0..10 {
            tokio::time::advance(MAX * 2).await;
            assert!(r.admit("reg", "probe").is_ok());
            r.answered("reg", Err(&limited()));
        }
        let map = r.by_host.lock().unwrap();
        assert_eq!(map["reg"].delay, MAX);
        assert_eq!(map["reg"].count, 11);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_refusals_opens_one_window_not_a_longer_one() {
        let r = Registries::default();
        for _ in 0..8 {
            assert!(r.admit("reg", "x").is_ok());
        }
        for _ in 0..8 {
            r.answered("reg", Err(&limited()));
        }
        assert_eq!(r.by_host.lock().unwrap()["reg"].delay, INITIAL);
        assert_eq!(r.count(Refusal::RateLimited), 1);
        tokio::time::advance(INITIAL * 2).await;
        assert_eq!(
            r.count(Refusal::RateLimited),
            1,
            "refusing until an answer says otherwise, though the window closed"
        );
        r.answered("reg", Ok(()));
        assert_eq!(r.count(Refusal::RateLimited), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_not_found_answer_clears_and_a_timeout_ends_the_probe_only() {
        let r = Registries::default();
        r.answered("reg", Err(&limited()));
        tokio::time::advance(INITIAL * 2).await;
        assert!(r.admit("reg", "probe").is_ok());
        let timeout = ActError::Timeout {
            what: "pull",
            after: Duration::from_secs(1),
        };
        r.answered("reg", Err(&timeout));
        assert!(r.admit("reg", "y").is_err(), "the window stays");
        tokio::time::advance(INITIAL * 2).await;
        assert!(r.admit("reg", "probe").is_ok());
        let missing = ActError::ImageNotFound {
            image: "x".into(),
            message: "manifest unknown".into(),
        };
        r.answered("reg", Err(&missing));
        assert!(
            r.by_host.lock().unwrap().is_empty(),
            "the registry answered"
        );
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
            Err(&ActError::Timeout {
                what: "pull",
                after: Duration::from_secs(1),
            }),
        );
        assert!(r.admit("quiet", "y").is_ok());
        assert_eq!(r.count(Refusal::Auth), 1);
        assert_eq!(r.count(Refusal::RateLimited), 0);
    }
}
