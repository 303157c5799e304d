//! What the planner needs of the configuration, already parsed and valid.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::{DeleteGuard, Platform, TierOverrides};

/// The planner's settings; `config` fills them once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `BERTH_HOST_ID`: the rows and objects this berth owns.
    pub host_id: String,
    /// `MOLECULE_IMAGE_REGISTRY` without a trailing `/`. `None` (unset or
    /// empty) is local-build mode: a runtime without an explicit image gets
    /// the placeholder `molecule-local/workspace-template-<runtime>:latest`,
    /// which the executor's build step resolves to the image it builds from
    /// the runtime's template repository. Pins need a registry and are not
    /// read in that mode.
    pub registry_prefix: Option<String>,
    /// `WORKSPACE_IMAGE_LOCAL_OVERRIDE`: ignore pins and use the tag as the
    /// local image store has it, never pulling.
    pub local_override: bool,
    /// `MOLECULE_IMAGE_PLATFORM` as resolved by `config`; passed to pull
    /// and create.
    pub platform: Option<Platform>,
    /// `PLATFORM_URL`, given to every container as PLATFORM_URL and
    /// MOLECULE_URL.
    pub platform_url: String,
    /// `BERTH_NETWORK`.
    pub network: String,
    /// `BERTH_WORKSPACE_ROOTS`: the host dirs a row may mount (absolute).
    pub workspace_roots: Vec<PathBuf>,
    /// `BERTH_ALLOW_HOST_ROOT_TIER`: T4 is allowed at all.
    pub allow_host_root_tier: bool,
    /// `TIERn_MEMORY_MB` / `TIERn_CPU_SHARES`.
    pub tiers: TierOverrides,
    /// `BERTH_DELETE_GUARD`.
    pub delete_guard: DeleteGuard,
    /// `BERTH_ORPHAN_GRACE`.
    pub orphan_grace: Duration,
    /// `BERTH_READY_MIN_UPTIME`.
    pub ready_min_uptime: Duration,
    /// `BERTH_PROVISION_TIMEOUT`, for runtimes whose row sets none.
    pub provision_timeout: Duration,
    /// `BERTH_CRASH_BACKOFF_INITIAL`.
    pub crash_backoff_initial: Duration,
    /// `BERTH_CRASH_BACKOFF_MAX`.
    pub crash_backoff_max: Duration,
    /// `BERTH_CRASH_LOOP_RESTARTS`: restarts within 10 min that make
    /// `crash_loop`.
    pub crash_loop_restarts: u32,
    /// `BERTH_STOP_TIMEOUT`: SIGTERM → SIGKILL.
    pub stop_timeout: Duration,
}

impl Settings {
    /// The documented defaults, registry mode with prefix `registry.test/ws`,
    /// host `default`, one allowed root `/srv/workspaces`.
    pub fn test() -> Self {
        Settings {
            host_id: "default".into(),
            registry_prefix: Some("registry.test/ws".into()),
            local_override: false,
            platform: None,
            platform_url: "http://platform:8080".into(),
            network: "molecule-monorepo-net".into(),
            workspace_roots: vec![PathBuf::from("/srv/workspaces")],
            allow_host_root_tier: false,
            tiers: TierOverrides::default(),
            delete_guard: DeleteGuard::Default,
            orphan_grace: Duration::from_secs(300),
            ready_min_uptime: Duration::from_secs(30),
            provision_timeout: Duration::from_secs(600),
            crash_backoff_initial: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            crash_loop_restarts: 5,
            stop_timeout: Duration::from_secs(10),
        }
    }

    /// The backoff before berth's `attempt`-th own start (0-based) of a
    /// stopped container: initial × 2^attempt, capped at the max.
    pub fn crash_backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.crash_backoff_initial
            .saturating_mul(factor)
            .min(self.crash_backoff_max)
    }
}
