//! The admin HTTP listener: `/healthz` (the process is alive), `/readyz`
//! (both snapshots complete and this instance holds the lease) and
//! `/metrics`. It binds 127.0.0.1 by default; metrics are rendered here,
//! off the reconcile path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What `/readyz` reports; the controller keeps it current.
#[derive(Debug, Default)]
pub struct Readiness {
    desired_complete: AtomicBool,
    observed_complete: AtomicBool,
    leader: AtomicBool,
}

impl Readiness {
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
            missing.push("this instance does not hold the host lease (passive)");
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { readiness, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
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
    fn readiness_needs_both_snapshots_and_the_lease() {
        let r = Readiness::default();
        assert!(r.missing().unwrap().contains("passive"));
        r.set_desired_complete(true);
        r.set_observed_complete(true);
        assert_eq!(
            r.missing().unwrap(),
            "this instance does not hold the host lease (passive)"
        );
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
