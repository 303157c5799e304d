//! The reconcile rules of DESIGN §2 for one workspace, in priority order.
//! This file holds ownership, `paused`, unknown state, `removed`, orphans,
//! duplicates, an interrupted replace and `stopped`; `running` holds the
//! rules for a row that wants its container up.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ContainerSpec, ContainerState, DesiredState, LABEL_MANAGED, ObservedContainer, ObservedVolume,
    Reason, Status, WorkspaceRow,
};

use super::StatusUpdate;
use super::ready::{Readiness, crash_looping, readiness, since, track_restarts};
use super::{Facts, Op, Plan, Target, Why, running};

/// What the workspace owns, and which of its names others hold.
pub(super) struct Mine<'a> {
    pub containers: Vec<&'a ObservedContainer>,
    pub volumes: Vec<&'a ObservedVolume>,
    pub conflicts: Vec<String>,
}

impl<'a> Mine<'a> {
    /// Rule 1: only objects with the managed label and this host (or no
    /// host, for legacy objects) that name this workspace are its own (and
    /// the Go provisioner's unlabelled /workspace volume, whose name holds
    /// the full id); any other object holding one of its names is a
    /// conflict, never touched.
    pub fn classify(f: &Facts<'a>) -> Self {
        let host = f.settings.host_id.as_str();
        let names = [f.id.container_name(), f.id.prev_container_name()];
        let volume_names = f.id.volume_names();
        let mut mine = Mine {
            containers: Vec::new(),
            volumes: Vec::new(),
            conflicts: Vec::new(),
        };
        for c in &f.containers {
            if mine.containers.iter().any(|m| m.id == c.id) {
                continue;
            }
            let named = names.contains(&c.name);
            if c.belongs_to(f.id, host) {
                mine.containers.push(c);
            } else if named {
                let whose = owner_of(c.label(LABEL_MANAGED), c.owned_by(host));
                mine.conflicts.push(format!("container {} {whose}", c.name));
            }
        }
        for v in &f.volumes {
            if mine.volumes.iter().any(|m| m.name == v.name) {
                continue;
            }
            let named = volume_names.contains(&v.name);
            if v.belongs_to(f.id, host) {
                mine.volumes.push(v);
            } else if named {
                let whose = owner_of(v.label(LABEL_MANAGED), v.owned_by(host));
                mine.conflicts.push(format!("volume {} {whose}", v.name));
            }
        }
        mine
    }
}

fn owner_of(managed: Option<&str>, owned_here: bool) -> &'static str {
    match (managed, owned_here) {
        (Some("true"), true) => "belongs to another workspace",
        (Some("true"), false) => "belongs to another berth host",
        _ => "exists without berth's ownership label",
    }
}

/// The actions, status and memory for one workspace.
pub fn plan(f: &Facts, now: DateTime<Utc>) -> Plan {
    let mut p = Plan::new(f.id, f.memory.clone());
    let mine = Mine::classify(f);
    let Some(row) = f.row else {
        orphan(f, &mine, now, &mut p);
        return p;
    };
    p.memory.orphan_since = None;
    p.memory.orphan_sightings = 0;
    if row.paused {
        p.status = Some(StatusUpdate::plain(Status::Paused));
        return p;
    }
    if f.probes.docker_unknown {
        p.notes
            .push("docker state unknown: nothing is done until it answers".into());
        p.requeue(f.settings.crash_backoff_initial);
        return p;
    }
    if row.desired_state == DesiredState::Removed {
        for c in &mine.containers {
            let target = Target::Id(c.id.clone());
            p.push(Op::RemoveContainer { target }, Why::Removed);
        }
        if mine.conflicts.is_empty() {
            for v in &mine.volumes {
                p.push(
                    Op::RemoveVolume {
                        name: v.name.clone(),
                        below_epoch: None,
                    },
                    Why::Removed,
                );
            }
            p.status = Some(StatusUpdate::plain(Status::Removed));
        } else {
            // An object berth does not own holds one of the names and may
            // hold the volumes too: they stay until it is gone.
            let detail = format!("volumes kept while {}", mine.conflicts.join("; "));
            p.status = Some(StatusUpdate::reason(Reason::NameConflict, Some(detail)));
        }
        return p;
    }
    let stopped = row.desired_state == DesiredState::Stopped;
    let conflicted = !mine.conflicts.is_empty();
    if stopped && (conflicted || !matches!(f.spec, Some(Ok(_)))) {
        // Stopping needs neither a spec nor the names: its own containers
        // stop whatever else is wrong with the row.
        for c in mine.containers.iter().filter(|c| is_up(c)) {
            let (target, timeout) = (Target::Id(c.id.clone()), f.settings.stop_timeout);
            p.push(Op::Stop { target, timeout }, Why::Stopped);
        }
        p.status = Some(StatusUpdate::plain(Status::Stopped));
    }
    if conflicted {
        let detail = mine.conflicts.join("; ");
        p.status = Some(StatusUpdate::reason(Reason::NameConflict, Some(detail)));
        return p;
    }
    if p.status.is_some() {
        return p;
    }
    let spec = match &f.spec {
        Some(Ok(spec)) => spec,
        Some(Err(e)) => {
            p.status = Some(StatusUpdate::reason(e.reason, Some(e.message.clone())));
            return p;
        }
        None => {
            let detail = Some("no container spec was built for the row".to_string());
            p.status = Some(StatusUpdate::reason(Reason::InvalidSpec, detail));
            return p;
        }
    };
    let Some(main) = settle(f, row, spec, &mine, now, &mut p) else {
        return p;
    };
    match row.desired_state {
        DesiredState::Stopped => {
            if let Some(c) = main.filter(|c| is_up(c)) {
                let timeout = f.settings.stop_timeout;
                p.push(
                    Op::Stop {
                        target: Target::Id(c.id.clone()),
                        timeout,
                    },
                    Why::Stopped,
                );
            }
            p.memory = super::Memory::default();
            p.status = Some(StatusUpdate::plain(Status::Stopped));
        }
        _ => running::running(f, row, spec, main, &mine, now, &mut p),
    }
    p
}

/// Up, or coming up: what `stopped` stops.
fn is_up(c: &ObservedContainer) -> bool {
    matches!(
        c.state,
        ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
    )
}

/// Rule 5: an owned container without a row goes after the grace period
/// and a second sighting, on complete knowledge only. Volumes stay.
fn orphan(f: &Facts, mine: &Mine, now: DateTime<Utc>, p: &mut Plan) {
    if !mine.volumes.is_empty() {
        let names: Vec<&str> = mine.volumes.iter().map(|v| v.name.as_str()).collect();
        p.notes
            .push(format!("volumes kept without a row: {}", names.join(", ")));
    }
    if mine.containers.is_empty() {
        p.memory = super::Memory::default();
        return;
    }
    if !(f.desired_complete && f.observed_complete) {
        p.notes
            .push("orphan removal waits for complete snapshots".into());
        p.requeue(Duration::from_secs(5));
        return;
    }
    let first = *p.memory.orphan_since.get_or_insert(now);
    p.memory.orphan_sightings = p.memory.orphan_sightings.saturating_add(1);
    let age = since(first, now);
    if p.memory.orphan_sightings >= 2 && age >= f.settings.orphan_grace {
        for c in &mine.containers {
            let target = Target::Id(c.id.clone());
            p.push(Op::RemoveContainer { target }, Why::Orphan { for_: age });
        }
    } else {
        p.requeue(f.settings.orphan_grace.saturating_sub(age));
    }
}

/// Sorts out which container is the workspace's: removes duplicates
/// (rule 10), gives a lone odd-named container the name, and finishes or
/// undoes an interrupted replace. `None` when that already makes the plan.
fn settle<'a>(
    f: &Facts,
    row: &WorkspaceRow,
    spec: &ContainerSpec,
    mine: &Mine<'a>,
    now: DateTime<Utc>,
    p: &mut Plan,
) -> Option<Option<&'a ObservedContainer>> {
    let (main_name, prev_name) = (f.id.container_name(), f.id.prev_container_name());
    let mut main = None;
    let mut prev = None;
    let mut others = Vec::new();
    for c in &mine.containers {
        if c.name == main_name {
            main = Some(*c);
        } else if c.name == prev_name {
            prev = Some(*c);
        } else {
            others.push(*c);
        }
    }
    if main.is_none() && prev.is_none() && !others.is_empty() {
        // The newest container matching the spec (else the newest) stays.
        others.sort_by_key(|c| (matches_spec(c, spec), c.created));
        let keeper = others.pop()?;
        let to = main_name.clone();
        p.push(
            Op::Rename {
                target: Target::Id(keeper.id.clone()),
                to,
            },
            Why::Rename,
        );
        main = Some(keeper);
    }
    if row.desired_state != DesiredState::Running
        && let (Some(new), Some(old)) = (main, prev)
    {
        // A replace cut short by a stop: the old container, proven before,
        // goes back under the name (stopped); the new one, never proven
        // ready, goes. Started again, the row replaces anew, with its way
        // back.
        p.push(
            Op::RemoveContainer {
                target: Target::Id(new.id.clone()),
            },
            Why::Restore,
        );
        p.push(
            Op::Rename {
                target: Target::Id(old.id.clone()),
                to: main_name.clone(),
            },
            Why::Restore,
        );
        main = Some(old);
        prev = None;
    }
    if let Some(keep) = main.or(prev) {
        for c in &others {
            if f.desired_complete && f.observed_complete {
                let why = Why::Duplicate {
                    keep: keep.id.clone(),
                };
                p.push(
                    Op::RemoveContainer {
                        target: Target::Id(c.id.clone()),
                    },
                    why,
                );
            } else {
                p.notes
                    .push("duplicate removal waits for complete snapshots".into());
            }
        }
    }
    match prev {
        None => Some(main),
        Some(prev) => {
            interrupted_replace(f, row, spec, main, prev, mine, now, p);
            None
        }
    }
}

pub(super) fn matches_spec(c: &ObservedContainer, spec: &ContainerSpec) -> bool {
    c.label(crate::model::LABEL_SPEC_HASH) == Some(spec.hash.as_str())
}

/// A `-prev` container means a replace stopped part way: finish it when
/// the new container is ready, wait while it may still become ready, else
/// bring the old one back under its name.
#[allow(clippy::too_many_arguments)]
fn interrupted_replace(
    f: &Facts,
    row: &WorkspaceRow,
    spec: &ContainerSpec,
    main: Option<&ObservedContainer>,
    prev: &ObservedContainer,
    mine: &Mine,
    now: DateTime<Utc>,
    p: &mut Plan,
) {
    let prev_target = || Target::Id(prev.id.clone());
    let Some(main) = main else {
        // Cut short between the rename and the create, or while a restore
        // was under way: the workspace was in a replace towards `spec`
        // and, in a rollout, holds its place there (the replace is tried
        // again on this workspace, not handed to the next one).
        if row.desired_state == DesiredState::Running {
            p.resumed = super::change::change(f, row, spec, prev, mine);
        }
        p.push(
            Op::Rename {
                target: prev_target(),
                to: f.id.container_name(),
            },
            Why::Restore,
        );
        if row.desired_state == DesiredState::Running && !prev.is_running() {
            p.push(
                Op::Start {
                    target: prev_target(),
                },
                Why::Restore,
            );
        }
        p.status = Some(if row.desired_state == DesiredState::Running {
            let detail = "an interrupted replace was undone; the change is tried again";
            StatusUpdate::reason(Reason::Starting, Some(detail.to_string()))
        } else {
            StatusUpdate::plain(Status::Stopped)
        });
        p.requeue(Duration::from_secs(1));
        return;
    };
    // The replace began no later than its new container was made: a
    // restarted berth, whose memory is empty, does not read the deadline
    // from the row's last desired change (a pin edit changes no row).
    p.memory.provisioning_since.get_or_insert(main.created);
    // A new container its maker left unstarted (that berth died between
    // the steps), with no failure of its own, is timed from the start this
    // berth gives it: the time no berth ran is not its image's.
    let failed_here = p
        .memory
        .failure
        .as_ref()
        .is_some_and(|fl| fl.hash == spec.hash);
    if main.state == ContainerState::Created
        && main.started_at.is_none()
        && !failed_here
        && p.memory.provisioning_since == Some(main.created)
    {
        p.memory.provisioning_since = Some(now);
    }
    let deadline = running::deadline(f, row, &p.memory);
    // Restarts are the new container's own: the old one's crash loop (the
    // very thing a row edit may fix) is not held against it.
    track_restarts(&mut p.memory, main, now);
    let ready = readiness(main, row.last_heartbeat_at, f.settings, now);
    let matches = matches_spec(main, spec);
    if matches {
        p.resumed = super::change::change(f, row, spec, prev, mine);
    }
    let alive = matches!(main.state, ContainerState::Running)
        || matches!(main.state, ContainerState::Restarting);
    if matches
        && main.state == ContainerState::Created
        && main.started_at.is_none()
        && now < deadline
    {
        // The replace goes on from there.
        return super::current::fill_created(spec, main, now, p, |fl| {
            let detail = format!("the replace is blocked: {}", fl.message);
            StatusUpdate::reason(Reason::ChangeBlocked, Some(detail))
        });
    }
    if matches && ready == Readiness::Ready {
        p.push(
            Op::RemoveContainer {
                target: prev_target(),
            },
            Why::FinishReplace,
        );
        p.memory.ready_container = Some(main.id.clone());
        p.memory.provisioning_since = None;
        p.status = Some(StatusUpdate::plain(Status::Online));
    } else if matches && alive && now < deadline && !crash_looping(&p.memory, f.settings) {
        p.status = Some(StatusUpdate::reason(Reason::WaitingReady, None));
        p.requeue(since(now, deadline));
        if let Readiness::NotYet { at: Some(at) } = ready {
            p.requeue(since(now, at));
        }
    } else {
        let main_target = Target::Id(main.id.clone());
        p.push(
            Op::RemoveContainer {
                target: main_target,
            },
            Why::Restore,
        );
        p.push(
            Op::Rename {
                target: prev_target(),
                to: f.id.container_name(),
            },
            Why::Restore,
        );
        p.push(
            Op::Start {
                target: prev_target(),
            },
            Why::Restore,
        );
        // The previous container served before the replace: restarted, it
        // is judged as one that was ready (crash-loop rules still apply),
        // not against a provision deadline long past.
        p.memory.ready_container = Some(prev.id.clone());
        p.memory.provisioning_since = None;
        let why = if !matches {
            "the container under the workspace's name is not the new one".to_string()
        } else if main.started_at.is_none() {
            format!("the new container was not started by {deadline}")
        } else if !alive {
            match main.exit_code {
                Some(code) if main.state == ContainerState::Exited => {
                    format!("the new container exited with code {code}")
                }
                _ => format!("the new container is {:?}", main.state).to_lowercase(),
            }
        } else if now >= deadline {
            format!("the new container was not ready by {deadline}")
        } else {
            "the new container restarts in a loop".to_string()
        };
        let detail = format!("{why}; the previous one serves");
        // A new container that never started, with no failure of its
        // own on record, says nothing of its spec or image: undone, not
        // held against the spec.
        if matches && (main.started_at.is_some() || failed_here) {
            p.memory.rolled_back_hash = Some(spec.hash.clone());
            p.memory.rolled_back_why = Some(why);
        }
        p.status = Some(StatusUpdate::reason(Reason::RolledBack, Some(detail)));
    }
}
