//! The admin HTTP listener: `/healthz` (the process is alive and its
//! control loop turns), `/readyz` (both snapshots complete and this
//! instance holds the lease) and
//! `/metrics`. It binds 127.0.0.1 by default; metrics are rendered here,
//! off the reconcile path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A control loop that has not turned for this long is stalled: `/healthz`
/// fails (the systemd watchdog has its own window).
pub const STALLED: Duration = Duration::from_secs(30);

/// Why `/readyz` fails without the lease. A standby and an instance whose
/// database session is down both lack it; the log tells which.
const LEASE_MISSING: &str = "this instance does not hold the host lease (passive: another instance holds it, or the database session is down; the log says which)";

/// What `/readyz` and `/healthz` report; the controller keeps it current.
#[derive(Debug, Default)]
pub struct Readiness {
    desired_complete: AtomicBool,
    observed_complete: AtomicBool,
    leader: AtomicBool,
    /// When the control loop last turned (it turns at least every second).
    turned: Mutex<Option<Instant>>,
}

impl Readiness {
    /// The control loop turned now.
    pub fn turned(&self) {
        self.turned_at(Instant::now());
    }

    fn turned_at(&self, at: Instant) {
        *self.turned.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    /// How long since the control loop last turned; `None` before it first
    /// did (berth is starting).
    pub fn since_turned(&self) -> Option<Duration> {
        self.turned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|at| at.elapsed())
    }

    /// Whether the control loop has not turned within `window`.
    pub fn stalled(&self, window: Duration) -> bool {
        self.since_turned().is_some_and(|d| d > window)
    }

    pub fn set_desired_complete(&self, v: bool) {
        self.desired_complete.store(v, Ordering::Relaxed);
    }

    pub fn set_observed_complete(&self, v: bool) {
        self.observed_complete.store(v, Ordering::Relaxed);
    }

    pub fn set_leader(&self, v: bool) {
        self.leader.store(v, Ordering::Relaxed);
    }

    /// `None` when ready, else what is missing.
    pub fn missing(&self) -> Option<String> {
        let mut missing = Vec::new();
        if !self.desired_complete.load(Ordering::Relaxed) {
            missing.push("the desired snapshot is incomplete");
        }
        if !self.observed_complete.load(Ordering::Relaxed) {
            missing.push("the observed snapshot is incomplete");
        }
        if !self.leader.load(Ordering::Relaxed) {
            missing.push(LEASE_MISSING);
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Arc<Readiness>,
    metrics: Metrics,
}

/// Whether `addr` listens beyond this machine (berth warns when it does:
/// `/metrics` shows the host's workspace counts).
pub fn is_public(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Serves the admin endpoints on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Arc<Readiness>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { readiness, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.readiness.since_turned() {
        Some(d) if d > STALLED => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the control loop has not turned for {}s\n", d.as_secs()),
        ),
        _ => (StatusCode::OK, "ok\n".into()),
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.readiness.missing() {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stopped_turning_is_stalled() {
        let r = Readiness::default();
        assert!(!r.stalled(Duration::ZERO), "not started is not stalled");
        r.turned();
        assert!(!r.stalled(Duration::from_secs(5)));
        let Some(past) = Instant::now().checked_sub(Duration::from_secs(40)) else {
            return;
        };
        r.turned_at(past);
        assert!(r.stalled(STALLED));
        assert!(r.since_turned().unwrap() >= Duration::from_secs(40));
    }

    #[test]
    fn readiness_needs_both_snapshots_and_the_lease() {
        let r = Readiness::default();
        assert!(r.missing().unwrap().contains("passive"));
        assert!(r.missing().unwrap().contains("database session is down"));
        r.set_desired_complete(true);
        r.set_observed_complete(true);
        assert_eq!(r.missing().unwrap(), LEASE_MISSING);
        r.set_leader(true);
        assert_eq!(r.missing(), None);
        r.set_observed_complete(false);
        assert!(r.missing().unwrap().contains("observed"));
    }

    #[test]
    fn loopback_is_not_public() {
        assert!(!is_public(&"127.0.0.1:9464".parse().unwrap()));
        assert!(!is_public(&"[::1]:9464".parse().unwrap()));
        assert!(is_public(&"0.0.0.0:9464".parse().unwrap()));
    }
}
