//! Everything the rules read for one workspace, and the controller memory
//! they carry from pass to pass.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ContainerSpec, Digest, ObservedContainer, ObservedVolume, PinRow, Reason, ResolvedImage,
    RuntimeRow, WorkspaceId, WorkspaceRow,
};

use super::{InvalidSpec, Phase, Settings};

/// The runtimes catalogue and the pins, indexed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    runtimes: BTreeMap<String, RuntimeRow>,
    pins: BTreeMap<(String, String), Digest>,
    /// When each pin row was last changed (by the database's clock).
    pinned_at: BTreeMap<(String, String), DateTime<Utc>>,
}

impl Catalogue {
    pub fn new(
        runtimes: impl IntoIterator<Item = RuntimeRow>,
        pins: impl IntoIterator<Item = PinRow>,
    ) -> Self {
        let mut out = Catalogue {
            runtimes: runtimes.into_iter().map(|r| (r.name.clone(), r)).collect(),
            ..Catalogue::default()
        };
        for p in pins {
            let key = (p.template_name, p.ring);
            out.pinned_at.insert(key.clone(), p.updated_at);
            out.pins.insert(key, p.digest);
        }
        out
    }

    /// The nine runtimes the migration seeds, no pins.
    pub fn seeded() -> Self {
        let names = [
            "langgraph",
            "claude-code",
            "openclaw",
            "deepagents",
            "crewai",
            "autogen",
            "hermes",
            "gemini-cli",
            "codex",
        ];
        Catalogue::new(names.map(RuntimeRow::new), [])
    }

    pub fn runtime(&self, name: &str) -> Option<&RuntimeRow> {
        self.runtimes.get(name)
    }

    pub fn pin(&self, runtime: &str, ring: &str) -> Option<&Digest> {
        self.pins.get(&(runtime.to_string(), ring.to_string()))
    }

    /// Every pin, as (runtime, ring, digest).
    pub fn pins(&self) -> impl Iterator<Item = (&str, &str, &Digest)> {
        self.pins
            .iter()
            .map(|((runtime, ring), digest)| (runtime.as_str(), ring.as_str(), digest))
    }

    /// When the pin of (`runtime`, `ring`) was last changed.
    pub fn pinned_at(&self, runtime: &str, ring: &str) -> Option<DateTime<Utc>> {
        self.pinned_at
            .get(&(runtime.to_string(), ring.to_string()))
            .copied()
    }

    pub fn set_pin(&mut self, runtime: &str, ring: &str, digest: Digest) {
        self.pins.insert((runtime.into(), ring.into()), digest);
    }
}

/// Why the last refresh of an image reference (a moving tag, a local
/// build) failed. The workspaces on it keep running what they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshFailure {
    /// The error, credentials masked.
    pub message: String,
    /// Whether a wanted change is known to be blocked: a new commit that
    /// does not build, or a repository that does not answer. A registry
    /// that did not answer a tag says nothing of a change.
    pub blocks_change: bool,
}

/// A failure the executor reported for this key, and when to try again
/// (per-key backoff is the controller's; the planner only reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// e.g. `image_not_found`, `registry_auth`, `start_failed`.
    pub reason: Reason,
    pub phase: Phase,
    /// The daemon's words, for `last_error`.
    pub message: String,
    pub retry_at: DateTime<Utc>,
    /// The spec hash that was being applied.
    pub hash: String,
}

/// What the controller remembers of a key between passes. Lost on
/// restart; every field degrades to a safe default when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// First pass that saw the key as an orphan, and how many have since.
    pub orphan_since: Option<DateTime<Utc>>,
    pub orphan_sightings: u32,
    /// Restarts seen in the last 10 minutes (policy or berth's own).
    pub restarts: Vec<DateTime<Utc>>,
    /// The container and Docker restart count last seen.
    pub restart_seen: Option<(String, u32)>,
    /// That container's exit code and OOM flag as last seen while it was
    /// down (a running container shows 0 and false again).
    pub last_exit: Option<(i64, bool)>,
    /// berth's own starts of a stopped container since it was last ready,
    /// and when the next may happen.
    pub own_starts: u32,
    pub next_start_at: Option<DateTime<Utc>>,
    /// Since when the container, ready before, has reported unhealthy
    /// (as first seen by this process), and the start it was in: a start
    /// since (a restart by anyone) begins a new count.
    pub unhealthy_since: Option<DateTime<Utc>>,
    pub unhealthy_start: Option<DateTime<Utc>>,
    /// When berth last restarted it for that, until it is ready again.
    pub health_restarted_at: Option<DateTime<Utc>>,
    /// When berth began provisioning without a row change (a vanished
    /// container, a new tag digest).
    pub provisioning_since: Option<DateTime<Utc>>,
    /// The container last seen ready.
    pub ready_container: Option<String>,
    pub failure: Option<Failure>,
    /// The spec hash whose replace was rolled back; not tried again until
    /// the desired spec changes.
    pub rolled_back_hash: Option<String>,
    /// Why that replace was undone, for the row while the previous
    /// container serves.
    pub rolled_back_why: Option<String>,
    /// When it was undone (for a rollout: whether the failure is of the
    /// pin edit now under way, or of an earlier one).
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// The `rollout` column of the replace undone, as the trail says or
    /// as this process let the replace go: the rollout it belonged to, and
    /// whether that counted it (`unproven`: the workspace was broken by
    /// itself before). `None` for a change that was no rollout's.
    pub rolled_back_rollout: Option<serde_json::Value>,
    /// The `rollout` column of the last pass this process made for the
    /// workspace (`None` outside a rollout): what an undo of that pass's
    /// replace records in `rolled_back_rollout`.
    pub rollout_replace: Option<serde_json::Value>,
    /// The image that spec wanted (its digest, else its image ID): a
    /// moving tag or a local build keeps its spec hash when its image
    /// moves on, and a new image is tried though the hash was undone.
    /// `None`: not known, and the hash alone decides.
    pub rolled_back_image: Option<String>,
    /// The last generation whose desired state the row was seen to reach
    /// (online, stopped, removed); the controller times convergence once
    /// per generation with it.
    pub reached_generation: Option<i64>,
    /// The `restart_epoch` berth last restarted for.
    pub restarted_epoch: Option<i64>,
    /// The generation at which this process first saw the row `removed`,
    /// and when, by its own clock: the volumes' hold runs from there.
    pub removed_seen: Option<(i64, DateTime<Utc>)>,
}

impl Memory {
    /// Records a failure the executor reported while carrying out a plan
    /// for the spec `hash`; the planner reports it and retries the same
    /// spec only from `retry_at` (the controller's per-key backoff).
    pub fn record_failure(&mut self, failure: Failure) {
        self.failure = Some(failure);
    }

    /// Records that a replace towards `hash` was undone by its restore
    /// path: the old container serves, and that spec is not tried again
    /// until the desired spec changes.
    pub fn record_rollback(
        &mut self,
        hash: &str,
        image: Option<String>,
        why: String,
        at: DateTime<Utc>,
    ) {
        self.rolled_back_hash = Some(hash.to_string());
        self.rolled_back_image = image;
        self.rolled_back_why = Some(why);
        self.rolled_back_at = Some(at);
        self.rolled_back_rollout = self.rollout_replace.take();
        self.provisioning_since = None;
    }

    /// Forgets an undone change once the row wants another spec (`wanted`,
    /// the hash of what it wants now, differs from the one undone: its
    /// container runs that, or another change is under way), so the same
    /// change wanted again later (a pin set back to a digest a halt
    /// reverted, an env edit made again) is a new request, tried afresh.
    /// The same spec hash is kept: a moving tag or a local build keeps its
    /// hash when its image moves, and a berth restarted after the undo
    /// knows the image the container runs, not the one undone, so only
    /// [`Memory::undid`]'s image comparison lets a new image through.
    pub fn forget_rollback_for(&mut self, wanted: &str) {
        if self.rolled_back_hash.as_deref() == Some(wanted) {
            return;
        }
        self.forget_rollback();
    }

    /// Forgets an undone change whatever the row wants now: the operator
    /// asked for it afresh (a halted digest pinned again).
    pub fn forget_rollback(&mut self) {
        self.rolled_back_hash = None;
        self.rolled_back_image = None;
        self.rolled_back_why = None;
        self.rolled_back_at = None;
        self.rolled_back_rollout = None;
    }

    /// Whether the spec `hash` wanting `image` (see [`image_identity`]) is
    /// the change a replace was undone towards: the hash and, where both
    /// are known, the image.
    pub fn undid(&self, hash: &str, image: Option<&str>) -> bool {
        self.rolled_back_hash.as_deref() == Some(hash)
            && match (&self.rolled_back_image, image) {
                (Some(undone), Some(wanted)) => undone == wanted,
                _ => true,
            }
    }
}

/// An image as a rollback remembers it: its digest, else its image ID.
pub fn image_identity(image: &crate::model::ResolvedImage) -> Option<String> {
    image
        .digest
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| image.id.clone())
}

/// The image the spec wants as far as the planner knows it: the image
/// knowledge of the pass, else the spec's own labels.
pub fn wanted_image(f: &Facts, spec: &crate::model::ContainerSpec) -> Option<String> {
    image_identity(&f.image).or_else(|| image_identity(&spec.known_image()))
}

/// What the pure code cannot learn, found out by the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probes {
    /// Docker answered this key with an error other than "not found": the
    /// state is unknown, not absent.
    pub docker_unknown: bool,
    /// Whether `template_path` holds a config.yaml; `None` = not looked.
    pub template_has_config: Option<bool>,
    /// Whether `template_path` is a directory berth can read; `None` = not
    /// looked (or no template).
    pub template_dir: Option<bool>,
}

/// The facts for one workspace.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub settings: &'a Settings,
    pub id: WorkspaceId,
    pub row: Option<&'a WorkspaceRow>,
    /// The row's spec, or why it has none (`None` without a row).
    pub spec: Option<Result<ContainerSpec, InvalidSpec>>,
    /// The runtime's provision timeout, or the default.
    pub provision_timeout: Duration,
    /// Containers labelled with this workspace, or holding its names.
    pub containers: Vec<&'a ObservedContainer>,
    /// Volumes labelled with this workspace, or holding its names.
    pub volumes: Vec<&'a ObservedVolume>,
    /// What is known now of the spec's image reference.
    pub image: ResolvedImage,
    /// Why the last refresh of that reference failed, if it has not
    /// succeeded since.
    pub refresh_failure: Option<RefreshFailure>,
    pub desired_complete: bool,
    pub observed_complete: bool,
    pub memory: Memory,
    pub probes: Probes,
    /// Several rows of this host share this workspace's 12-character
    /// names: a legacy object under such a name is no row's (DESIGN §1.3:
    /// it belongs to the row its name names only when exactly one does).
    pub shared_name: bool,
    /// The row's change waits, and why (a rollout holds back the image
    /// the change goes with): the container that is there is looked after
    /// as it is (started, restarted for its epoch), nothing replaces it.
    pub held_change: Option<String>,
}

impl<'a> Facts<'a> {
    /// Facts for `id` with no row and nothing observed, both snapshots
    /// complete.
    pub fn empty(settings: &'a Settings, id: WorkspaceId) -> Self {
        Facts {
            settings,
            id,
            row: None,
            spec: None,
            provision_timeout: settings.provision_timeout,
            containers: Vec::new(),
            volumes: Vec::new(),
            image: ResolvedImage::default(),
            refresh_failure: None,
            shared_name: false,
            held_change: None,
            desired_complete: true,
            observed_complete: true,
            memory: Memory::default(),
            probes: Probes::default(),
        }
    }
}
