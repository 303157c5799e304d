//! The rows berth reads: `workspaces`, `runtimes`, `runtime_image_pins`.
//! Field names are the column names.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::status::string_enum;
use super::{Digest, Reason, Secret, Status, WorkspaceId};

string_enum!(
    /// `desired_state`: what the operator wants of the container.
    DesiredState, "desired_state" {
        Running => "running",
        Stopped => "stopped",
        Removed => "removed",
    }
);

string_enum!(
    /// `workspace_access`: how `workspace_dir` is mounted at /workspace.
    WorkspaceAccess, "workspace_access" {
        None => "none",
        ReadOnly => "read_only",
        ReadWrite => "read_write",
    }
);

/// One `workspaces` row. `env`, `config_files` and `auth_token` are secrets:
/// `Debug` never shows them. `env` and `config_files` stay raw JSON because
/// the database only promises objects; the planner judges their contents.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkspaceRow {
    pub id: WorkspaceId,
    pub name: String,
    pub runtime: String,
    /// Any integer; 1..=4 name a tier, anything else means T2.
    pub tier: i32,
    pub ring: String,
    pub host: String,
    pub desired_state: DesiredState,
    pub env: Secret<serde_json::Value>,
    pub image: Option<String>,
    pub workspace_dir: Option<String>,
    pub workspace_access: WorkspaceAccess,
    pub template_path: Option<String>,
    pub config_files: Secret<serde_json::Value>,
    pub auth_token: Option<Secret<String>>,
    pub awareness_url: Option<String>,
    pub awareness_namespace: Option<String>,
    pub session_epoch: i64,
    pub restart_epoch: i64,
    /// When `restart_epoch` last changed (kept by a trigger); `None` from
    /// a row no edit of it has touched since the column came.
    pub restart_requested_at: Option<DateTime<Utc>>,
    pub paused: bool,
    pub generation: i64,
    /// When a desired column last changed: the provision clock starts here.
    pub desired_changed_at: DateTime<Utc>,
    /// The older of two rows whose container names collide keeps the name.
    pub created_at: DateTime<Utc>,
    // Controller-owned columns, as berth last wrote them.
    pub status: Option<Status>,
    pub status_reason: Option<Reason>,
    pub container_id: Option<String>,
    pub runtime_image_digest: Option<String>,
    pub runtime_image_id: Option<String>,
    pub url: Option<String>,
    pub observed_generation: i64,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub restart_count: i32,
    pub last_error: Option<String>,
    pub rollout: Option<serde_json::Value>,
    /// Written by the agent or the platform; a readiness signal.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

/// Whether `status` (with `reason`) is the desired state reached: online
/// (not rolled back) for `running`, stopped, removed.
pub fn reached(desired: DesiredState, status: Option<Status>, reason: Option<Reason>) -> bool {
    match (desired, status) {
        (DesiredState::Running, Some(Status::Online)) => reason != Some(Reason::RolledBack),
        (DesiredState::Stopped, Some(Status::Stopped)) => true,
        (DesiredState::Removed, Some(Status::Removed)) => true,
        _ => false,
    }
}

impl WorkspaceRow {
    /// Whether the row's status shows its desired state reached: online
    /// (not rolled back) for `running`, stopped, removed. A row stuck
    /// provisioning, degraded or failed has not converged, whatever its
    /// observed generation says (that is the generation its status
    /// describes, reached or not).
    pub fn shows_desired(&self) -> bool {
        reached(self.desired_state, self.status, self.status_reason)
    }

    /// Whether the row's last status says the workspace is broken by
    /// itself: crash looping, or failed (a spec berth cannot build, a start
    /// the engine refuses, a provision timeout). A row provisioning may be
    /// berth's own replace or restore under way, and says nothing.
    pub fn broken(&self) -> bool {
        match self.status {
            Some(Status::Failed) => true,
            Some(Status::Degraded) => self.status_reason == Some(Reason::CrashLoop),
            _ => false,
        }
    }

    /// Broken, or showing a change of its own undone (`online/
    /// rolled_back`: the row's spec, which the next change carries along,
    /// did not come up): a replace of it proves nothing about an image.
    pub fn troubled(&self) -> bool {
        self.broken() || self.status_reason == Some(Reason::RolledBack)
    }

    /// A valid running row with defaults everywhere, for tests and
    /// fixtures; chain the builder methods below to vary it.
    pub fn test(id: WorkspaceId, at: DateTime<Utc>) -> Self {
        WorkspaceRow {
            id,
            name: format!("test-{}", id.id12()),
            runtime: "langgraph".into(),
            tier: 2,
            ring: "stable".into(),
            host: "default".into(),
            desired_state: DesiredState::Running,
            env: Secret::new(serde_json::json!({})),
            image: None,
            workspace_dir: None,
            workspace_access: WorkspaceAccess::None,
            template_path: None,
            config_files: Secret::new(serde_json::json!({"config.yaml": "name: test\n"})),
            auth_token: None,
            awareness_url: None,
            awareness_namespace: None,
            session_epoch: 0,
            restart_epoch: 0,
            restart_requested_at: None,
            paused: false,
            generation: 1,
            desired_changed_at: at,
            created_at: at,
            status: None,
            status_reason: None,
            container_id: None,
            runtime_image_digest: None,
            runtime_image_id: None,
            url: None,
            observed_generation: 0,
            status_changed_at: None,
            restart_count: 0,
            last_error: None,
            rollout: None,
            last_heartbeat_at: None,
        }
    }

    pub fn with_runtime(mut self, runtime: &str) -> Self {
        self.runtime = runtime.into();
        self
    }

    pub fn with_tier(mut self, tier: i32) -> Self {
        self.tier = tier;
        self
    }

    pub fn with_state(mut self, state: DesiredState) -> Self {
        self.desired_state = state;
        self
    }

    pub fn with_env(mut self, env: serde_json::Value) -> Self {
        self.env = Secret::new(env);
        self
    }

    pub fn with_image(mut self, image: &str) -> Self {
        self.image = Some(image.into());
        self
    }

    pub fn with_workspace(mut self, dir: Option<&str>, access: WorkspaceAccess) -> Self {
        self.workspace_dir = dir.map(str::to_string);
        self.workspace_access = access;
        self
    }

    pub fn with_config_files(mut self, files: serde_json::Value) -> Self {
        self.config_files = Secret::new(files);
        self
    }

    pub fn with_awareness(mut self, url: &str, namespace: &str) -> Self {
        self.awareness_url = Some(url.into());
        self.awareness_namespace = Some(namespace.into());
        self
    }

    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }
}

/// One `runtimes` row: the catalogue that replaces the Go code's map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeRow {
    pub name: String,
    pub image_repository: String,
    pub provision_timeout: Option<Duration>,
    pub session_volume: bool,
}

impl RuntimeRow {
    /// The catalogue default: repository `workspace-template-<name>`.
    pub fn new(name: &str) -> Self {
        RuntimeRow {
            name: name.into(),
            image_repository: format!("workspace-template-{name}"),
            provision_timeout: None,
            session_volume: name == "claude-code",
        }
    }
}

/// One `runtime_image_pins` row: (`template_name`, `ring`) → digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRow {
    pub template_name: String,
    pub ring: String,
    pub digest: Digest,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_never_shows_its_secrets_in_debug_output() {
        let id: WorkspaceId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let mut row = WorkspaceRow::test(id, DateTime::UNIX_EPOCH)
            .with_env(serde_json::json!({"API_KEY": "sk-very-secret"}))
            .with_config_files(serde_json::json!({"config.yaml": "token: hush-hush"}));
        row.auth_token = Some(Secret::new("tok-sekrit".into()));
        let shown = format!("{row:?}");
        for secret in ["sk-very-secret", "hush-hush", "tok-sekrit", "API_KEY"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn only_the_desired_states_own_status_counts_as_reached() {
        let id: WorkspaceId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let row = |desired, status, reason| {
            let mut r = WorkspaceRow::test(id, DateTime::UNIX_EPOCH);
            r.desired_state = desired;
            r.status = status;
            r.status_reason = reason;
            r
        };
        use DesiredState::{Removed, Running, Stopped};
        let cases = [
            (Running, Some(Status::Online), None, true),
            (
                Running,
                Some(Status::Online),
                Some(Reason::RolledBack),
                false,
            ),
            (
                Running,
                Some(Status::Provisioning),
                Some(Reason::ImageNotFound),
                false,
            ),
            (
                Running,
                Some(Status::Degraded),
                Some(Reason::CrashLoop),
                false,
            ),
            (
                Running,
                Some(Status::Failed),
                Some(Reason::InvalidSpec),
                false,
            ),
            (Running, None, None, false),
            (Stopped, Some(Status::Stopped), None, true),
            (Stopped, Some(Status::Online), None, false),
            (Removed, Some(Status::Stopped), None, false),
            (Removed, Some(Status::Removed), None, true),
        ];
        for (desired, status, reason, want) in cases {
            let r = row(desired, status, reason);
            assert_eq!(r.shows_desired(), want, "{desired:?} {status:?} {reason:?}");
        }
    }

    #[test]
    fn desired_state_and_access_parse_their_column_strings() {
        assert_eq!(
            "removed".parse::<DesiredState>().unwrap(),
            DesiredState::Removed
        );
        assert_eq!(
            "read_only".parse::<WorkspaceAccess>().unwrap(),
            WorkspaceAccess::ReadOnly
        );
        assert!("readonly".parse::<WorkspaceAccess>().is_err());
    }
}
