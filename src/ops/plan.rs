//! `berth plan`: what one pass would do now on this host, changing nothing.
//!
//! It reads the host's rows and the catalogue, lists the engine once
//! (list and inspect calls only) and runs the pure planner over that
//! snapshot. It holds no lease and writes nothing.
//!
//! The planner's memory lives in the running controller; this command
//! starts as a freshly started berth would, from what the trail and the
//! rows keep: the changes the rows show undone (as a starting berth reads
//! them), and two projections. An orphan container counts as seen since
//! it was created (and seen before), so its removal shows once it is
//! older than `BERTH_ORPHAN_GRACE`; a `removed` row counts as seen since
//! its last change, so its volumes' removal shows once the removal hold
//! has run from then. A running berth counts both from its own first
//! sighting, so it removes at that time or later, never sooner. Backoffs
//! that the controller remembers are not visible here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::OpsError;
use crate::config::Config;
use crate::desired;
use crate::model::{DesiredState, WorkspaceId, WorkspaceRow};
use crate::observed::Observer;
use crate::plan::{self, Action, Memory, PassPlan, Settings, Snapshot, StatusUpdate};

/// The plan of one pass over this host.
#[derive(Clone, Debug, Serialize)]
pub struct HostPlan {
    pub host: String,
    pub rows: usize,
    pub containers: usize,
    /// The containers among them this host's berth owns (managed, and
    /// labelled for this host or for none).
    pub host_containers: usize,
    /// Workspaces with actions, a status to write, or notes.
    pub workspaces: Vec<WorkspacePlan>,
    /// Orphan and duplicate removals withheld by the delete guard.
    pub guard_blocked: Option<GuardBlocked>,
    /// Owned objects that name no workspace berth can tell; never touched.
    pub unattributed: Vec<String>,
    /// When this host has no rows: which hosts have (a wrong
    /// `BERTH_HOST_ID` shows here first).
    pub no_rows: Option<String>,
    /// Image changes among the replaces, by rollout: `berth run` gates
    /// them in waves, which a single pass does not show.
    pub rollouts: Vec<RolloutPreview>,
    /// `BERTH_ROLLOUT_CANARY` and `BERTH_ROLLOUT_MAX_PARALLEL`.
    pub waves: (u32, u32),
    /// Workspaces the pass leaves failed or degraded with nothing to do
    /// now (a name conflict, an invalid row; a blocked change or a crash
    /// loop waiting for its retry).
    pub stuck: usize,
}

/// The replaces of one rollout in the plan.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutPreview {
    pub runtime: String,
    /// The pin's ring, `tag` or `build`.
    pub track: String,
    pub to: String,
    pub workspaces: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct GuardBlocked {
    pub wanted: usize,
    pub limit: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkspacePlan {
    pub id: String,
    pub container: String,
    /// The row's name; `None` when there is no row (an orphan).
    pub name: Option<String>,
    pub actions: Vec<ActionView>,
    /// The status the pass would write, when it differs from the row's.
    pub status: Option<StatusChange>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActionView {
    /// The executor step: `create`, `stop`, `remove_container`, ….
    pub op: &'static str,
    /// The container it addresses (12 characters of its id, or `new
    /// container`).
    pub target: Option<String>,
    /// The image, volume or new name the step concerns.
    pub object: Option<String>,
    /// Why, as the audit trail words it.
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusChange {
    pub from: String,
    pub to: String,
    pub detail: Option<String>,
}

impl HostPlan {
    /// Workspaces the pass would act on or write a status for.
    pub fn pending(&self) -> usize {
        self.workspaces
            .iter()
            .filter(|w| !w.actions.is_empty() || w.status.is_some())
            .count()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let others = if self.containers > self.host_containers {
            format!(
                " ({} more of other hosts or no owner seen on this engine, not touched)",
                self.containers - self.host_containers
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "host {}: {} row(s), {} container(s) of this host observed{others}",
            self.host, self.rows, self.host_containers
        );
        if let Some(notice) = &self.no_rows {
            let _ = writeln!(out, "{notice}");
            if self.host_containers == 0 {
                let _ = writeln!(
                    out,
                    "no container on this engine is berth's for host {:?} either: nothing to do",
                    self.host
                );
            } else {
                let _ = writeln!(
                    out,
                    "{} container(s) on this engine are berth's for host {:?}: without rows, \
                     each is an orphan to a berth running as this host",
                    self.host_containers, self.host
                );
                if self.pending() == 0 {
                    out.push_str(
                        "nothing to do now (an orphan is removed once older than BERTH_ORPHAN_GRACE)\n",
                    );
                }
            }
        } else if self.workspaces.is_empty() && self.stuck == 0 {
            out.push_str("nothing to do: every workspace is in line with its row\n");
        } else if self.workspaces.is_empty() {
            let _ = writeln!(
                out,
                "nothing to do now, but {} workspace(s) are failed or degraded (`berth status` says why)",
                self.stuck
            );
        }
        for w in &self.workspaces {
            let name = w
                .name
                .as_deref()
                .map_or("(no row)".into(), |n| format!("{n:?}"));
            let _ = writeln!(out, "\n{} {} {}", w.container, w.id, name);
            for a in &w.actions {
                let mut line = format!("  {}", a.op);
                for part in [&a.target, &a.object].into_iter().flatten() {
                    let _ = write!(line, " {part}");
                }
                let _ = writeln!(out, "{line} ({})", a.reason);
            }
            if let Some(s) = &w.status {
                let detail = s
                    .detail
                    .as_deref()
                    .map_or(String::new(), |d| format!(": {d}"));
                // The same status with a new detail or generation is
                // written again, not changed.
                if s.from == s.to {
                    let _ = writeln!(out, "  status stays {}{detail}", s.to);
                } else {
                    let _ = writeln!(out, "  status {} → {}{detail}", s.from, s.to);
                }
            }
            for note in &w.notes {
                let _ = writeln!(out, "  note: {note}");
            }
        }
        if !self.rollouts.is_empty() {
            let (canary, max_parallel) = self.waves;
            let _ = writeln!(
                out,
                "\nimage rollouts: berth run replaces these in waves ({canary} canary first, then at most \
                 {max_parallel} at a time, each wave once the one before is ready), not all at once as listed:"
            );
            for r in &self.rollouts {
                let to = r.to.get(..19).unwrap_or(&r.to);
                let _ = writeln!(
                    out,
                    "  {} ({}) → {to}: {} workspace(s)",
                    r.runtime, r.track, r.workspaces
                );
            }
        }
        if let Some(g) = &self.guard_blocked {
            let _ = writeln!(
                out,
                "\ndelete guard: the pass wants {} orphan/duplicate removals, over the limit of {}; it makes none",
                g.wanted, g.limit
            );
        }
        if !self.unattributed.is_empty() {
            let _ = writeln!(
                out,
                "\nkept, naming no workspace berth can tell: {}",
                self.unattributed.join(", ")
            );
        }
        let withheld = self.guard_blocked.as_ref().map_or(String::new(), |g| {
            format!(
                ", and {} orphan/duplicate removal(s) the delete guard withholds",
                g.wanted
            )
        });
        let _ = writeln!(
            out,
            "\n{} workspace(s) with pending changes{withheld}",
            self.pending()
        );
        // Said above already when nothing else is listed.
        if self.stuck > 0 && !self.workspaces.is_empty() {
            let _ = writeln!(
                out,
                "{} workspace(s) are failed or degraded with nothing to do now (`berth status` says why)",
                self.stuck
            );
        }
        out
    }
}

/// Reads both sides once and plans one pass; changes nothing.
pub async fn plan(config: &Config) -> Result<HostPlan, OpsError> {
    let pool = super::connect(config).await?;
    let read = async {
        let rows = desired::load_rows(&pool, &config.host_id).await?;
        let catalogue = desired::load_catalogue(&pool).await?;
        let no_rows = match rows.is_empty() {
            true => Some(desired::no_rows_notice(
                &config.host_id,
                &desired::hosts_with_rows(&pool).await?,
            )),
            false => None,
        };
        let rolled_back = desired::rolled_back(&pool, &config.host_id).await?;
        Ok::<_, desired::ReadError>((rows, catalogue, no_rows, rolled_back))
    };
    let read = read.await;
    pool.close().await;
    let (rows, catalogue, no_rows, rolled_back) = read?;
    let docker = crate::docker::connect(config.docker_host.as_deref())
        .await
        .map_err(OpsError::Docker)?;
    let (mut observer, observed, _triggers) =
        Observer::new(docker, &config.host_id, config.resync_interval);
    // The engine answered its ping: an error listing is the engine's
    // (unreachable only when it is transient).
    observer.relist().await.map_err(|e| {
        if e.is_transient() {
            OpsError::Docker(e)
        } else {
            OpsError::Failed(format!("listing this host's containers and volumes: {e}"))
        }
    })?;
    let (containers, volumes, observed_complete) = observed.snapshot();
    let settings = config.plan_settings();
    let now = Utc::now();
    let mut snapshot = Snapshot {
        probes: rows
            .iter()
            .map(|r| (r.id, crate::controller::probe(r)))
            .collect(),
        rows,
        catalogue,
        containers,
        volumes,
        images: BTreeMap::new(),
        refresh_failures: BTreeMap::new(),
        desired_complete: true,
        observed_complete,
        memory: BTreeMap::new(),
        // A running berth's latch is its own: this is a fresh pass's view.
        guard_held: Default::default(),
        guard_held_limit: None,
    };
    snapshot.memory = orphan_memory(&snapshot, &settings);
    for r in rolled_back {
        let memory = snapshot.memory.entry(r.id).or_default();
        memory.rolled_back_hash = Some(r.hash);
        memory.rolled_back_image = r.image;
        memory.rolled_back_why = r.why;
        memory.rolled_back_at = Some(r.at);
    }
    for row in snapshot
        .rows
        .iter()
        .filter(|r| r.desired_state == DesiredState::Removed)
    {
        snapshot.memory.entry(row.id).or_default().removed_seen =
            Some((row.generation, row.desired_changed_at));
    }
    let pass = plan::plan_pass(&snapshot, &settings, now);
    Ok(HostPlan {
        no_rows,
        waves: (config.rollout.canary, config.rollout.max_parallel),
        ..describe(&snapshot, &settings, pass)
    })
}

/// The projection for orphans: each owned container of a workspace
/// without a row counts as seen since its creation, once before.
pub(crate) fn orphan_memory(s: &Snapshot, settings: &Settings) -> BTreeMap<WorkspaceId, Memory> {
    let with_row: BTreeSet<WorkspaceId> = s
        .rows
        .iter()
        .filter(|r| r.host == settings.host_id)
        .map(|r| r.id)
        .collect();
    let mut since: BTreeMap<WorkspaceId, DateTime<Utc>> = BTreeMap::new();
    for c in &s.containers {
        let Some(id) = c.workspace() else { continue };
        if with_row.contains(&id) || !c.owned_by(&settings.host_id) {
            continue;
        }
        let first = since.entry(id).or_insert(c.created);
        *first = (*first).min(c.created);
    }
    since
        .into_iter()
        .map(|(id, at)| {
            let memory = Memory {
                orphan_since: Some(at),
                orphan_sightings: 1,
                ..Memory::default()
            };
            (id, memory)
        })
        .collect()
}

/// The pass as the operator reads it.
pub(crate) fn describe(s: &Snapshot, settings: &Settings, pass: PassPlan) -> HostPlan {
    let rows: BTreeMap<WorkspaceId, &WorkspaceRow> = s
        .rows
        .iter()
        .filter(|r| r.host == settings.host_id)
        .map(|r| (r.id, r))
        .collect();
    let mut rollouts: BTreeMap<crate::controller::RolloutKey, usize> = BTreeMap::new();
    for p in &pass.plans {
        if let Some(row) = rows.get(&p.id)
            && let Some(r) = crate::controller::image_replace(p, &row.runtime)
        {
            *rollouts.entry(r.key).or_default() += 1;
        }
    }
    let stuck = pass
        .plans
        .iter()
        .filter(|p| {
            p.actions.is_empty()
                && p.status.as_ref().is_some_and(|s| {
                    matches!(
                        s.status,
                        crate::model::Status::Failed | crate::model::Status::Degraded
                    )
                })
        })
        .count();
    let workspaces = pass
        .plans
        .into_iter()
        .filter_map(|p| {
            let row = rows.get(&p.id).copied();
            let status = p
                .status
                .as_ref()
                .and_then(|update| status_change(row?, update));
            let actions: Vec<ActionView> = p.actions.iter().map(action_view).collect();
            if actions.is_empty() && status.is_none() && p.notes.is_empty() {
                return None;
            }
            Some(WorkspacePlan {
                id: p.id.to_string(),
                container: p.id.container_name(),
                name: row.map(|r| r.name.clone()),
                actions,
                status,
                notes: p.notes,
            })
        })
        .collect();
    HostPlan {
        host: settings.host_id.clone(),
        rows: rows.len(),
        containers: s.containers.len(),
        host_containers: s
            .containers
            .iter()
            .filter(|c| c.owned_by(&settings.host_id))
            .count(),
        workspaces,
        guard_blocked: pass
            .guard_blocked
            .map(|(wanted, limit)| GuardBlocked { wanted, limit }),
        unattributed: pass.unattributed,
        no_rows: None,
        rollouts: rollouts
            .into_iter()
            .map(|(key, workspaces)| RolloutPreview {
                runtime: key.runtime.clone(),
                track: key.track.as_str().to_string(),
                to: key.to.as_str().to_string(),
                workspaces,
            })
            .collect(),
        waves: (0, 0),
        stuck,
    }
}

/// The write the controller would make: status, reason or detail differ,
/// or the row's generation is not yet observed.
fn status_change(row: &WorkspaceRow, update: &StatusUpdate) -> Option<StatusChange> {
    if update.shown_by(row) {
        return None;
    }
    let shown = |status: Option<&str>, reason: Option<&str>| match (status, reason) {
        (None, _) => "(none)".to_string(),
        (Some(s), None) => s.to_string(),
        (Some(s), Some(r)) => format!("{s}/{r}"),
    };
    Some(StatusChange {
        from: shown(
            row.status.map(|s| s.as_str()),
            row.status_reason.map(|r| r.as_str()),
        ),
        to: shown(
            Some(update.status.as_str()),
            update.reason.map(|r| r.as_str()),
        ),
        detail: update.detail.clone(),
    })
}

/// One step: only what it addresses (see `Op::object`).
fn action_view(a: &Action) -> ActionView {
    ActionView {
        op: a.op.name(),
        target: a.op.target().map(|t| t.to_string()),
        object: a.op.object(),
        reason: a.why.to_string(),
    }
}

#[cfg(test)]
mod tests;
