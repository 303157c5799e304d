//! The Prometheus metrics of DESIGN §1.4, prefix `berth_`. Labels are
//! bounded enums: never ids, names or error strings.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric berth exports, registered on its own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `result`: success, error, requeue.
    pub reconcile_total: IntCounterVec,
    /// `kind`: the error's bounded kind.
    pub reconcile_errors_total: IntCounterVec,
    pub reconcile_time_seconds: Histogram,
    pub workqueue_depth: IntGauge,
    pub workqueue_adds_total: IntCounter,
    pub workqueue_retries_total: IntCounter,
    pub workqueue_queue_duration_seconds: Histogram,
    pub workqueue_work_duration_seconds: Histogram,
    /// `status`: the row statuses of DESIGN §1.2.
    pub workspaces: IntGaugeVec,
    pub unconverged_workspaces: IntGauge,
    pub oldest_unconverged_age_seconds: IntGauge,
    pub time_to_converge_seconds: Histogram,
    /// `action`: the executor op; `result`: success or error.
    pub docker_actions_total: IntCounterVec,
    /// `reason`: why a replace was undone.
    pub rollbacks_total: IntCounterVec,
    pub rollout_halts_total: IntCounter,
    /// `state`: active or halted; image rollouts this instance carries.
    pub rollouts: IntGaugeVec,
    /// The highest wave of an active rollout (0: the canary).
    pub rollout_wave: IntGauge,
    /// `reason`: rate_limited or auth; registry hosts in backoff.
    pub registry_backoffs: IntGaugeVec,
    /// `phase`: pull, build, create, start, readiness.
    pub provision_timeouts_total: IntCounterVec,
    pub delete_guard_blocked_total: IntCounter,
    /// 1 while this instance holds the host lease.
    pub leader: IntGauge,
    /// `side`: desired or observed; 1 while that snapshot is complete.
    pub snapshot_complete: IntGaugeVec,
    /// `version`: always 1.
    pub build_info: IntGaugeVec,
}

/// Reconcile and Docker call durations: 5 ms to ~10 min.
const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// `reconcile_total{result}`: how a pass ended (controller::finish).
const RESULTS: &[&str] = &["success", "error", "requeue"];

/// `reconcile_errors_total{kind}`: `ActError::kind` (a non-transient
/// Docker error by `DockerError::kind`), `database` when the outcome cannot
/// be written, `panic` when a pass is lost.
const ERROR_KINDS: &[&str] = &[
    "name_conflict",
    "start_failed",
    "image_not_found",
    "registry_auth",
    "registry_rate_limited",
    "image_build_failed",
    "invalid_spec",
    "config_missing",
    "gone",
    "in_the_way",
    "timeout",
    "lease_lost",
    "transient",
    "not_found",
    "conflict",
    "auth",
    "refused",
    "stream",
    "other",
    "database",
    "panic",
];

/// `rollbacks_total{reason}` and `provision_timeouts_total{phase}`: the
/// `plan::Phase` a replace was undone in or a provision stalled in.
const PHASES: &[&str] = &["pull", "build", "create", "start", "readiness"];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("berth".into()), None)?;
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(SECONDS.to_vec()))?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let metrics = Metrics {
            reconcile_total: counter_vec(
                "reconcile_total",
                "Reconcile passes by result",
                &["result"],
            )?,
            reconcile_errors_total: counter_vec(
                "reconcile_errors_total",
                "Failed reconcile passes by error kind",
                &["kind"],
            )?,
            reconcile_time_seconds: histogram(
                "reconcile_time_seconds",
                "Duration of one dispatch round (planning the host and starting its passes)",
            )?,
            workqueue_depth: gauge("workqueue_depth", "Keys waiting for a pass")?,
            workqueue_adds_total: counter("workqueue_adds_total", "Keys added to the queue")?,
            workqueue_retries_total: counter(
                "workqueue_retries_total",
                "Keys requeued with error backoff",
            )?,
            workqueue_queue_duration_seconds: histogram(
                "workqueue_queue_duration_seconds",
                "Time a key waits in the queue before its pass",
            )?,
            workqueue_work_duration_seconds: histogram(
                "workqueue_work_duration_seconds",
                "Time a pass takes once started",
            )?,
            workspaces: gauge_vec(
                "workspaces",
                "Workspaces of this host by status",
                &["status"],
            )?,
            unconverged_workspaces: gauge(
                "unconverged_workspaces",
                "Workspaces not converged: the observed generation is behind the generation, or the status falls short of the desired state",
            )?,
            oldest_unconverged_age_seconds: gauge(
                "oldest_unconverged_age_seconds",
                "Age of the oldest unconverged desired change",
            )?,
            time_to_converge_seconds: histogram(
                "time_to_converge_seconds",
                "From a desired change to the row showing it converged",
            )?,
            docker_actions_total: counter_vec(
                "docker_actions_total",
                "Executor actions by action and result",
                &["action", "result"],
            )?,
            rollbacks_total: counter_vec(
                "rollbacks_total",
                "Replaces undone, by reason",
                &["reason"],
            )?,
            rollout_halts_total: counter("rollout_halts_total", "Image rollouts halted")?,
            rollouts: gauge_vec(
                "rollouts",
                "Image rollouts (pin, tag, build) by state: active, or halted (being put back, or a tag or build target held back until it moves)",
                &["state"],
            )?,
            rollout_wave: gauge(
                "rollout_wave",
                "The highest wave of an active rollout (0 is the canary)",
            )?,
            registry_backoffs: gauge_vec(
                "registry_backoffs",
                "Registry hosts berth leaves alone after a refusal, by reason",
                &["reason"],
            )?,
            provision_timeouts_total: counter_vec(
                "provision_timeouts_total",
                "Provision timeouts by stalled phase",
                &["phase"],
            )?,
            delete_guard_blocked_total: counter(
                "delete_guard_blocked_total",
                "Passes whose removals the delete guard withheld",
            )?,
            leader: gauge("leader", "1 while this instance holds the host lease")?,
            snapshot_complete: gauge_vec(
                "snapshot_complete",
                "1 while the desired or observed snapshot is complete",
                &["side"],
            )?,
            build_info: gauge_vec("build_info", "berth's version", &["version"])?,
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // A labelled counter shows a child only once it exists. Every known
        // label value starts at 0, so increase() and rate() see the first
        // event after a restart as a step from 0 rather than a new series.
        for result in RESULTS {
            metrics
                .reconcile_total
                .with_label_values(&[result])
                .inc_by(0);
        }
        for kind in ERROR_KINDS {
            metrics
                .reconcile_errors_total
                .with_label_values(&[kind])
                .inc_by(0);
        }
        for phase in PHASES {
            metrics
                .rollbacks_total
                .with_label_values(&[phase])
                .inc_by(0);
            metrics
                .provision_timeouts_total
                .with_label_values(&[phase])
                .inc_by(0);
        }
        for side in ["desired", "observed"] {
            metrics.snapshot_complete.with_label_values(&[side]).set(0);
        }
        for state in ["active", "halted"] {
            metrics.rollouts.with_label_values(&[state]).set(0);
        }
        for reason in ["rate_limited", "auth"] {
            metrics
                .registry_backoffs
                .with_label_values(&[reason])
                .set(0);
        }
        Ok(metrics)
    }

    /// The text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_design_metric_is_exported_with_the_prefix() {
        let m = Metrics::new().unwrap();
        m.reconcile_total.with_label_values(&["success"]).inc();
        m.reconcile_errors_total
            .with_label_values(&["transient"])
            .inc();
        m.workspaces.with_label_values(&["online"]).set(3);
        m.docker_actions_total
            .with_label_values(&["create", "success"])
            .inc();
        m.rollbacks_total.with_label_values(&["not_ready"]).inc();
        m.provision_timeouts_total
            .with_label_values(&["pull"])
            .inc();
        let text = m.render();
        for name in [
            "reconcile_total",
            "reconcile_errors_total",
            "reconcile_time_seconds",
            "workqueue_depth",
            "workqueue_adds_total",
            "workqueue_retries_total",
            "workqueue_queue_duration_seconds",
            "workqueue_work_duration_seconds",
            "workspaces",
            "unconverged_workspaces",
            "oldest_unconverged_age_seconds",
            "time_to_converge_seconds",
            "docker_actions_total",
            "rollbacks_total",
            "rollout_halts_total",
            "rollouts",
            "rollout_wave",
            "registry_backoffs",
            "provision_timeouts_total",
            "delete_guard_blocked_total",
            "leader",
            "snapshot_complete",
            "build_info",
        ] {
            assert!(
                text.contains(&format!("# TYPE berth_{name} ")),
                "berth_{name} missing"
            );
        }
        assert!(
            text.contains("berth_build_info{version=\"0.1.0\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn the_labelled_counters_the_alerts_rate_start_at_zero_for_every_known_value() {
        let text = Metrics::new().unwrap().render();
        let series = [
            ("reconcile_total", "result", RESULTS),
            ("reconcile_errors_total", "kind", ERROR_KINDS),
            ("rollbacks_total", "reason", PHASES),
            ("provision_timeouts_total", "phase", PHASES),
        ];
        for (name, label, values) in series {
            for value in values {
                let line = format!("berth_{name}{{{label}=\"{value}\"}} 0\n");
                assert!(text.contains(&line), "{line:?} missing from:\n{text}");
            }
        }
    }

    #[test]
    fn the_known_label_values_are_exactly_those_berth_counts() {
        use crate::act::{ActError, Object};
        use crate::docker::DockerError;
        use crate::plan::Phase;

        let phases = [
            Phase::Pull,
            Phase::Build,
            Phase::Create,
            Phase::Start,
            Phase::Readiness,
        ];
        let shown: Vec<String> = phases.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown, PHASES);

        let m = || String::from("m");
        let docker = [
            DockerError::NotFound { message: m() },
            DockerError::Conflict { message: m() },
            DockerError::Auth { message: m() },
            DockerError::RateLimited { message: m() },
            DockerError::Refused {
                status: 400,
                message: m(),
            },
            DockerError::Server {
                status: 500,
                message: m(),
            },
            DockerError::Transport { message: m() },
            DockerError::Stream { message: m() },
            DockerError::Other { message: m() },
        ];
        let digest = crate::model::Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let mut errors = vec![
            ActError::NameConflict {
                object: Object::Volume,
                name: m(),
                detail: m(),
            },
            ActError::StartFailed {
                container: m(),
                message: m(),
            },
            ActError::ImageNotFound {
                image: m(),
                message: m(),
            },
            ActError::DigestGone {
                image: m(),
                digest,
                message: m(),
            },
            ActError::RegistryAuth {
                image: m(),
                message: m(),
            },
            ActError::RegistryRateLimited {
                image: m(),
                message: m(),
            },
            ActError::BuildFailed {
                image: m(),
                message: m(),
            },
            ActError::InvalidFiles { message: m() },
            ActError::ConfigMissing {
                container: m(),
                volume: m(),
            },
            ActError::InvalidBind {
                dir: m(),
                target: m(),
                detail: m(),
            },
            ActError::Gone {
                object: Object::Container,
                name: m(),
            },
            ActError::InTheWay {
                object: Object::Container,
                name: m(),
                detail: m(),
            },
            ActError::Timeout {
                what: "pull",
                after: std::time::Duration::from_secs(1),
            },
            ActError::Fenced { action: "stop" },
        ];
        errors.extend(docker.into_iter().map(|e| ActError::docker("create", e)));
        // Every variant is in the list above: a new one fails this match
        // until it is added there too.
        for e in &errors {
            match e {
                ActError::NameConflict { .. }
                | ActError::StartFailed { .. }
                | ActError::ImageNotFound { .. }
                | ActError::DigestGone { .. }
                | ActError::RegistryAuth { .. }
                | ActError::RegistryRateLimited { .. }
                | ActError::BuildFailed { .. }
                | ActError::InvalidFiles { .. }
                | ActError::ConfigMissing { .. }
                | ActError::InvalidBind { .. }
                | ActError::Gone { .. }
                | ActError::InTheWay { .. }
                | ActError::Timeout { .. }
                | ActError::Fenced { .. }
                | ActError::Docker { .. } => {}
            }
        }
        let mut kinds: Vec<&str> = errors.iter().map(ActError::kind).collect();
        kinds.extend(["database", "panic"]);
        kinds.sort_unstable();
        kinds.dedup();
        let mut known = ERROR_KINDS.to_vec();
        known.sort_unstable();
        assert_eq!(kinds, known);
    }
}
