//! What Docker shows: containers and volumes as the observer lists and
//! inspects them, and what is known of an image reference.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{
    Digest, LABEL_HOST, LABEL_MANAGED, LABEL_SPEC_HASH, LABEL_WORKSPACE, Material, WorkspaceId,
};

/// Docker's container states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

/// The container's health check, when its image defines one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// The image has no health check.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// One container as listed and inspected.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub health: Health,
    /// `Config.Image`: the reference the container was created from.
    pub image: String,
    pub image_id: String,
    pub created: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Docker's `RestartCount`: restarts by the restart policy since create.
    pub restart_count: u32,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// The networks the container is attached to now, as inspect shows
    /// them; `None` when not known (a listed stranger).
    pub networks: Option<Vec<String>>,
    /// The material fields as inspect shows them. Needed only when the
    /// container's spec-hash label has another version than this berth's;
    /// `None` then means "unchanged" (nothing is replaced on a guess).
    pub material: Option<Material>,
}

/// Ownership (DESIGN §1.3): the managed label, and `berth.host` equal to
/// this host, or absent on a legacy object of the Go provisioner. An
/// object with berth's other labels and no host is no berth's: on a daemon
/// several berths share, none of them may claim it.
fn owned(labels: &BTreeMap<String, String>, host: &str) -> bool {
    labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
        && labels
            .get(LABEL_HOST)
            .map_or_else(|| legacy(labels), |h| h == host)
}

/// Legacy: managed, and none of the labels berth puts on what it creates
/// (workspace, host, spec hash). Other labels do not count: a container
/// also carries its image's labels, whatever their names.
fn legacy(labels: &BTreeMap<String, String>) -> bool {
    labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
        && ![LABEL_WORKSPACE, LABEL_HOST, LABEL_SPEC_HASH]
            .iter()
            .any(|k| labels.contains_key(*k))
}

fn workspace_label(labels: &BTreeMap<String, String>) -> Option<WorkspaceId> {
    labels.get(LABEL_WORKSPACE)?.parse().ok()
}

impl ObservedContainer {
    pub fn owned_by(&self, host: &str) -> bool {
        owned(&self.labels, host)
    }

    pub fn is_legacy(&self) -> bool {
        legacy(&self.labels)
    }

    /// Whether the container is `id`'s on `host`: owned and labelled with
    /// it, or a legacy container under its name.
    pub fn belongs_to(&self, id: WorkspaceId, host: &str) -> bool {
        let named = self.name == id.container_name() || self.name == id.prev_container_name();
        self.owned_by(host) && (self.workspace() == Some(id) || (self.is_legacy() && named))
    }

    /// Whether this is `id`'s own container on `host`: under its name,
    /// labelled with it and owned here (another host's container under
    /// that name is nothing of this host's row).
    pub fn is_main_of(&self, id: WorkspaceId, host: &str) -> bool {
        self.name == id.container_name() && self.workspace() == Some(id) && self.owned_by(host)
    }

    /// The workspace the `berth.workspace` label names, if it parses.
    pub fn workspace(&self) -> Option<WorkspaceId> {
        workspace_label(&self.labels)
    }

    /// The `berth.spec-hash` label split into version and value.
    pub fn spec_hash(&self) -> Option<(&str, &str)> {
        self.labels.get(LABEL_SPEC_HASH)?.split_once(':')
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Up and not on its way down.
    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running)
    }
}

/// One volume as listed (volume events carry no labels: volumes are
/// tracked by listing only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedVolume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl ObservedVolume {
    pub fn owned_by(&self, host: &str) -> bool {
        owned(&self.labels, host)
    }

    pub fn is_legacy(&self) -> bool {
        legacy(&self.labels)
    }

    pub fn workspace(&self) -> Option<WorkspaceId> {
        workspace_label(&self.labels)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Whether the volume is `id`'s on `host`: owned and labelled with it,
    /// a legacy volume under one of its names, or the Go provisioner's
    /// /workspace volume, which Docker made without labels through the
    /// bind and whose name carries the full id.
    pub fn belongs_to(&self, id: WorkspaceId, host: &str) -> bool {
        let named = id.volume_names().contains(&self.name);
        let labelled =
            self.owned_by(host) && (self.workspace() == Some(id) || (self.is_legacy() && named));
        labelled || self.is_implicit_workspace_volume(id)
    }

    /// The Go provisioner's unlabelled `ws-<full id>-workspace`.
    pub fn is_implicit_workspace_volume(&self, id: WorkspaceId) -> bool {
        self.labels.is_empty() && self.name == id.workspace_volume()
    }
}

/// What the controller knows of an image reference now: the digest the
/// registry (or the pin) gives it and the image ID in the local store.
/// Unknown fields are `None`; an unknown value is never a change.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResolvedImage {
    pub digest: Option<Digest>,
    pub id: Option<String>,
}
