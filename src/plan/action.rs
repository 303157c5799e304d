//! What a plan asks the executor to do, and why.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ContainerSpec, Digest, FilesSpec, ImageRef, ImageSource, Platform, VolumeSpec, WorkspaceId,
};

use super::{Memory, StatusUpdate};

/// The container an action addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An observed container, by Docker id (names move during a replace).
    Id(String),
    /// The container this plan's `Create` made; nothing if it made none.
    Created,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Id(id) => f.write_str(id.get(..12).unwrap_or(id)),
            Target::Created => f.write_str("new container"),
        }
    }
}

/// One executor step. Each is idempotent against the state it expects
/// (renaming a container to the name it has is done; removing what is gone
/// is done).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Make the image local: pull (registry), build (local-build mode) or
    /// only look (local override).
    EnsureImage {
        image: ImageRef,
        source: ImageSource,
        platform: Option<Platform>,
        /// What a moving reference (a tag, a local build) is known to name
        /// now: the executor makes that image local instead of asking the
        /// registry or the template repository again, so a runtime's
        /// workspaces run one image until a refresh moves it.
        known: crate::model::ResolvedImage,
    },
    /// Create the volume if absent, then check its labels (the engine keeps
    /// old labels on create): other labels are a `name_conflict`, except a
    /// legacy volume (the managed label and no `berth.*` label, or no label
    /// at all on the /workspace volume the Go bind made), which is adopted
    /// with its data as it is.
    EnsureVolume(VolumeSpec),
    RemoveVolume {
        name: String,
        /// A session discard: remove only while the volume's recorded
        /// session epoch (none: 0) is below this, so a discard the cache
        /// has not seen yet is never made twice.
        below_epoch: Option<i64>,
    },
    /// Before a replace stops the old container: the new one's host
    /// directories resolve under the workspace roots and its network
    /// exists (made if absent), so a create that would fail for them does
    /// not cost the old container a stop.
    Preflight {
        binds: Vec<String>,
        others: Vec<crate::model::OtherDir>,
        network: String,
    },
    Create(Box<ContainerSpec>),
    /// Write the files into /configs of a created, not yet started,
    /// container as one archive.
    WriteFiles {
        target: Target,
        files: FilesSpec,
    },
    Start {
        target: Target,
    },
    Stop {
        target: Target,
        timeout: Duration,
    },
    Restart {
        target: Target,
        timeout: Duration,
    },
    Rename {
        target: Target,
        to: String,
    },
    /// Attach a running container to the network it was made on, with its
    /// aliases, when something detached it (its published port goes with
    /// the network: the workspace's URL answers again, on a new port).
    Connect {
        target: Target,
        network: String,
        aliases: Vec<String>,
    },
    /// Wait until the container is ready (DESIGN §2 rule 9) or the
    /// deadline passes; passing it is a failure.
    WaitReady {
        target: Target,
        deadline: DateTime<Utc>,
    },
    /// Force-remove the container (kill and remove in one call).
    RemoveContainer {
        target: Target,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::EnsureImage { .. } => "ensure_image",
            Op::EnsureVolume(_) => "ensure_volume",
            Op::RemoveVolume { .. } => "remove_volume",
            Op::Preflight { .. } => "preflight",
            Op::Create(_) => "create",
            Op::WriteFiles { .. } => "write_files",
            Op::Start { .. } => "start",
            Op::Stop { .. } => "stop",
            Op::Restart { .. } => "restart",
            Op::Rename { .. } => "rename",
            Op::Connect { .. } => "connect",
            Op::WaitReady { .. } => "wait_ready",
            Op::RemoveContainer { .. } => "remove_container",
        }
    }

    /// The container the step addresses, if any.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Op::WriteFiles { target, .. }
            | Op::Start { target }
            | Op::Stop { target, .. }
            | Op::Restart { target, .. }
            | Op::Rename { target, .. }
            | Op::Connect { target, .. }
            | Op::WaitReady { target, .. }
            | Op::RemoveContainer { target } => Some(target),
            _ => None,
        }
    }

    /// What else the step addresses, in words: an image, a volume, the
    /// new name. Never the spec or the files (env and tokens are secrets).
    pub fn object(&self) -> Option<String> {
        match self {
            Op::EnsureImage { image, .. } => Some(image.to_string()),
            Op::EnsureVolume(v) => Some(v.name.clone()),
            Op::RemoveVolume { name, .. } => Some(name.clone()),
            Op::Create(spec) => Some(format!("{} from {}", spec.name, spec.image)),
            Op::Rename { to, .. } => Some(format!("→ {to}")),
            Op::Connect { network, .. } => Some(format!("network {network}")),
            _ => None,
        }
    }
}

/// What makes a replace necessary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Digest {
        from: Option<Digest>,
        to: Digest,
    },
    ImageId {
        from: String,
        to: String,
    },
    Image {
        from: String,
        to: String,
    },
    /// Material fields that differ (values never shown: env is secret).
    Fields(Vec<&'static str>),
    Hash {
        from: String,
        to: String,
    },
    SessionEpoch {
        from: i64,
        to: i64,
    },
    /// A Go provisioner container, moved once onto berth's spec.
    Legacy,
}

fn short(s: &str) -> &str {
    s.get(..19).unwrap_or(s)
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The same digest under another name: a new registry prefix.
            Change::Digest {
                from: Some(from),
                to,
            } if from == to => {
                write!(f, "image reference (digest {}… unchanged)", to.short())
            }
            Change::Digest { from, to } => {
                let from = from.as_ref().map_or("none", Digest::short);
                write!(f, "digest {from}… → {}…", to.short())
            }
            Change::ImageId { from, to } => write!(f, "image id {}… → {}…", short(from), short(to)),
            Change::Image { from, to } => write!(f, "image {from} → {to}"),
            Change::Fields(fields) => write!(f, "{} changed", fields.join(", ")),
            Change::Hash { from, to } => write!(f, "spec hash {}… → {}…", short(from), short(to)),
            Change::SessionEpoch { from, to } => write!(f, "session_epoch {from} → {to}"),
            Change::Legacy => f.write_str("legacy container moves onto berth's spec"),
        }
    }
}

/// Why an action is in the plan; `Display` is the audit line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    Missing,
    Replace(Change),
    Removed,
    Orphan {
        for_: Duration,
    },
    Duplicate {
        keep: String,
    },
    Stopped,
    CrashStart {
        attempt: u32,
        exit_code: Option<i64>,
        oom: bool,
    },
    NotStarted,
    /// The running container is not on the network it was made on.
    Detached {
        network: String,
    },
    /// A container that was ready has reported unhealthy since `since`,
    /// for the runtime's provision timeout.
    Unhealthy {
        since: DateTime<Utc>,
    },
    RestartEpoch {
        from: i64,
        to: i64,
    },
    /// A replace undone: the previous container goes back under the name.
    Restore,
    /// A create (or a replace that had to remove the old container first)
    /// undone: the new container that did not start goes; there is no
    /// previous one.
    Undo,
    FinishReplace,
    Dead,
    Rename,
}

/// `2h`, `5m`, `30s`: the largest whole unit.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        86_400.. => format!("{}d", s / 86_400),
        3_600.. => format!("{}h", s / 3_600),
        60.. => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Missing => f.write_str("create: no container"),
            Why::Replace(change) => write!(f, "recreate: {change}"),
            Why::Removed => f.write_str("remove: desired_state is removed"),
            Why::Orphan { for_ } => {
                write!(f, "remove orphan: no row for {}", short_duration(*for_))
            }
            Why::Duplicate { keep } => write!(
                f,
                "remove duplicate: keeping {}",
                keep.get(..12).unwrap_or(keep)
            ),
            Why::Stopped => f.write_str("stop: desired_state is stopped"),
            Why::CrashStart {
                attempt,
                exit_code,
                oom,
            } => {
                f.write_str("start: container is stopped")?;
                if let Some(code) = exit_code {
                    write!(
                        f,
                        " (exit code {code}{})",
                        if *oom { ", OOM killed" } else { "" }
                    )?;
                }
                write!(f, ", berth's attempt {attempt}")
            }
            Why::NotStarted => f.write_str("start: container was created but never started"),
            Why::Detached { network } => write!(
                f,
                "connect: the container is not on its network {network} (detached by hand?)"
            ),
            Why::Unhealthy { since } => write!(
                f,
                "restart: its health check has reported unhealthy since {}",
                since.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Why::RestartEpoch { from, to } => {
                write!(
                    f,
                    "restart: restart_epoch {to} (the container was made at {from})"
                )
            }
            Why::Restore => f.write_str("restore: the previous container takes the name back"),
            Why::Undo => f.write_str("undo: the new container did not start and goes"),
            Why::FinishReplace => f.write_str("finish replace: the new container is ready"),
            Why::Dead => f.write_str("remove: container is dead"),
            Why::Rename => f.write_str("rename: the workspace's only container takes its name"),
        }
    }
}

/// One step with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub op: Op,
    pub why: Why,
}

impl Action {
    pub fn new(op: Op, why: Why) -> Self {
        Action { op, why }
    }

    /// Orphan and duplicate removals: counted by the delete guard and made
    /// only on complete knowledge.
    pub fn is_guarded_removal(&self) -> bool {
        matches!(self.op, Op::RemoveContainer { .. })
            && matches!(self.why, Why::Orphan { .. } | Why::Duplicate { .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op.name())?;
        if let Some(t) = self.op.target() {
            write!(f, " {t}")?;
        }
        if let Some(o) = self.op.object() {
            write!(f, " {o}")?;
        }
        write!(f, " ({})", self.why)
    }
}

/// The way back: when a step at index `from` or later fails (a
/// `WaitReady` past its deadline included), the executor runs `actions`
/// in order. When `previous` names the old container of a replace, it
/// serves again and the row shows `online`/`rolled_back`; otherwise the
/// row shows the failure.
#[derive(Clone, Debug, PartialEq)]
pub struct Restore {
    pub from: usize,
    pub actions: Vec<Action>,
    pub previous: Option<String>,
}

/// The decision for one workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub id: WorkspaceId,
    pub actions: Vec<Action>,
    pub restore: Option<Restore>,
    /// `None` when there is no row to write (an orphan) or nothing new is
    /// known (unknown Docker state).
    pub status: Option<StatusUpdate>,
    /// Plan again after this long even without a trigger.
    pub requeue_after: Option<Duration>,
    /// The controller's memory for this key after this plan.
    pub memory: Memory,
    /// Things worth an event or a log line that are not actions.
    pub notes: Vec<String>,
    /// A replace already under way onto the row's spec (a `-prev`
    /// container holds the old one, the new one is not yet proven): what
    /// it changes. The controller counts it in its rollout, so a berth
    /// restarted mid-wave sees the replaces it left running.
    pub resumed: Option<super::Change>,
}

impl Plan {
    pub fn new(id: WorkspaceId, memory: Memory) -> Self {
        Plan {
            id,
            actions: Vec::new(),
            restore: None,
            status: None,
            requeue_after: None,
            memory,
            notes: Vec::new(),
            resumed: None,
        }
    }

    pub fn push(&mut self, op: Op, why: Why) {
        self.actions.push(Action::new(op, why));
    }

    /// The spec hash this plan creates, if it creates a container: what a
    /// failure or a rollback of the plan is recorded against.
    pub fn desired_hash(&self) -> Option<&str> {
        self.actions.iter().find_map(|a| match &a.op {
            Op::Create(spec) => Some(spec.hash.as_str()),
            _ => None,
        })
    }

    pub fn guarded_removals(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.is_guarded_removal())
            .count()
    }

    pub(crate) fn requeue(&mut self, after: Duration) {
        let after = after.max(Duration::from_secs(1));
        self.requeue_after = Some(self.requeue_after.map_or(after, |r| r.min(after)));
    }
}
