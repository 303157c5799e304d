//! The reconcile rules of DESIGN §2 for one workspace, in priority order.
//! This file holds ownership, `paused`, unknown state, `removed`, orphans,
//! duplicates and `stopped`; `interrupted` a replace found part way;
//! `running` the rules for a row that wants its container up.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ContainerSpec, ContainerState, DesiredState, LABEL_MANAGED, ObservedContainer, ObservedVolume,
    Reason, Status, WorkspaceRow,
};

use super::StatusUpdate;
use super::ready::since;
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
    /// conflict, never touched. A legacy object under a 12-character name
    /// several rows share is no row's.
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
            let unclaimed = f.shared_name && c.workspace().is_none();
            if c.belongs_to(f.id, host) && !unclaimed {
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
            // The full id names the /workspace volume: never shared.
            let unclaimed = f.shared_name
                && v.workspace().is_none()
                && !v.is_implicit_workspace_volume(f.id)
                && v.name != f.id.workspace_volume();
            if v.belongs_to(f.id, host) && !unclaimed {
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
    if row.desired_state != DesiredState::Removed {
        p.memory.removed_seen = None;
    }
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
        // From when this process first saw `removed`, not from the row's
        // `desired_changed_at`: that is the start of the transaction that
        // set it (a transaction held open ten seconds would have no hold
        // left at its commit), and by the database's clock.
        let seen = match p.memory.removed_seen {
            Some((generation, at)) if generation == row.generation => at,
            _ => now,
        };
        p.memory.removed_seen = Some((row.generation, seen));
        let hold_until = seen + REMOVED_HOLD;
        if mine.conflicts.is_empty() && now < hold_until && !mine.volumes.is_empty() {
            // The data goes only once `removed` has held: a row set to
            // removed and back at once (a script's mistake, a flapping
            // edit) loses its container, never its volumes.
            let detail = format!(
                "removed: the volumes go at {} unless the row changes",
                hold_until.format("%H:%M:%S UTC")
            );
            p.status = Some(StatusUpdate::with_detail(Status::Stopped, detail));
            p.requeue(since(now, hold_until));
        } else if mine.conflicts.is_empty() {
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
        // A stranger under a name a replace would need (`-prev`, a
        // volume) stops every change, yet the workspace's own container is
        // looked after in place (started when down, restarted for its
        // epoch or a failing health check: none of it needs the names),
        // and the row says it serves on rather than `failed`.
        let own = mine
            .containers
            .iter()
            .find(|c| c.name == row.id.container_name())
            .copied();
        let serves_on = |wanted: bool| {
            let detail = format!(
                "{detail}: berth changes nothing of this workspace until it is gone; its container serves on"
            );
            if wanted {
                StatusUpdate::reason(Reason::ChangeBlocked, Some(detail)).steady()
            } else {
                StatusUpdate::with_detail(Status::Online, detail)
            }
        };
        match (own, &f.spec) {
            (Some(c), Some(Ok(spec))) if !stopped => {
                let wanted = super::change::change(f, row, spec, c, &mine).is_some();
                super::current::current(f, row, Some(spec), c, false, now, &mut p);
                if plain_online(&p) {
                    p.status = Some(serves_on(wanted));
                } else {
                    p.notes
                        .push(format!("{detail}: no change is made until it is gone"));
                }
            }
            // A row that makes no spec: its container of the last spec
            // serves on, if it runs.
            (Some(c), _) if !stopped && c.state == ContainerState::Running => {
                p.status = Some(serves_on(true));
            }
            _ => p.status = Some(StatusUpdate::reason(Reason::NameConflict, Some(detail))),
        }
        return p;
    }
    if p.status.is_some() {
        return p;
    }
    if let Some(why) = &f.held_change {
        let serving = StatusUpdate::with_detail(Status::Online, why.clone());
        serve_on(f, row, &mine, now, &mut p, serving);
        // Whatever the container does meanwhile, the row's change is not
        // acted on.
        p.status = p.status.map(StatusUpdate::unobserved);
        return p;
    }
    let spec = match &f.spec {
        Some(Ok(spec)) => spec,
        Some(Err(e)) => {
            // A row edited into one that makes no spec leaves the
            // container of its last spec serving: the change is blocked,
            // the workspace has not failed.
            let blocked = format!(
                "{}: the {} change cannot be made; the container of the last spec serves on",
                e.message, e.reason
            );
            let serving = StatusUpdate::reason(Reason::ChangeBlocked, Some(blocked)).steady();
            // A container its row stopped is not brought back by the
            // same edit that makes no spec: it would run what the operator
            // just edited away from.
            let stopped_before = row.status == Some(Status::Stopped);
            if stopped_before || !serve_on(f, row, &mine, now, &mut p, serving) {
                p.actions.clear();
                p.status = Some(StatusUpdate::reason(e.reason, Some(e.message.clone())));
            }
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

/// Looks after the workspace's own container as it is, for a row whose
/// change is not made now (refused, or waiting): started when down,
/// restarted for its epoch or a failing check, none of which needs the
/// row's new spec. Once it serves plainly the row shows `serving`;
/// otherwise what `current` says (starting, crash looping) carries
/// `serving`'s words after its own, so the row never hides why its
/// change is not made. A container that never ran served nothing, and one
/// the engine holds (dead, being removed) is no container to serve on:
/// whether there is one that serves or is brought back.
fn serve_on(
    f: &Facts,
    row: &WorkspaceRow,
    mine: &Mine,
    now: DateTime<Utc>,
    p: &mut Plan,
    serving: StatusUpdate,
) -> bool {
    let Some(c) = mine
        .containers
        .iter()
        .find(|c| c.name == row.id.container_name() && c.started_at.is_some())
    else {
        return false;
    };
    super::current::current(f, row, None, c, false, now, p);
    if plain_online(p) {
        p.status = Some(serving);
        return true;
    }
    let Some(status) = p.status.as_mut() else {
        return false;
    };
    if let Some(why) = serving.detail {
        status.detail = Some(match status.detail.take() {
            Some(own) => format!("{own}; {why}"),
            None => why,
        });
    }
    true
}

/// Whether the plan says plainly online: no reason, no detail (what a
/// blocked change then words instead).
fn plain_online(p: &Plan) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.status == Status::Online && s.reason.is_none() && s.detail.is_none())
}

/// How long a row must say `removed` before its volumes go.
pub const REMOVED_HOLD: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

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
        p.notes.push(format!(
            "volumes kept without a row: {} (berth never deletes them; a row with this id \
             takes them up again, `docker volume rm` removes them once their data is not wanted)",
            names.join(", ")
        ));
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
        // Said without the time left, so the note (and its event) is one
        // for the whole grace.
        p.notes.push(format!(
            "no row: its container goes once seen without one for {} (BERTH_ORPHAN_GRACE) and twice",
            super::action::short_duration(f.settings.orphan_grace)
        ));
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
    // A replace's old container renamed away from `-prev` (by hand, say)
    // is still the way back while the new one is unproven: the newest
    // container made before it, to another spec than the new one's,
    // serves as `-prev` (finished or restored as one), not as a
    // duplicate. So it does when the row changed again meanwhile (the new
    // one is then restored away) and when it runs again (started by
    // hand): no container goes for one not yet proven.
    let unproven = |c: &ObservedContainer| {
        p.memory.ready_container.as_deref() != Some(c.id.as_str())
            && super::ready::readiness(c, row.last_heartbeat_at, f.settings, now)
                != super::ready::Readiness::Ready
    };
    if row.desired_state == DesiredState::Running
        && prev.is_none()
        && let Some(new) = main.filter(|c| unproven(c))
        && let Some(at) = others
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let hash = crate::model::LABEL_SPEC_HASH;
                c.created < new.created && c.label(hash) != new.label(hash)
            })
            .max_by_key(|(_, c)| c.created)
            .map(|(at, _)| at)
    {
        prev = Some(others.remove(at));
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
            super::interrupted::interrupted_replace(f, row, spec, main, prev, mine, now, p);
            None
        }
    }
}

pub(super) fn matches_spec(c: &ObservedContainer, spec: &ContainerSpec) -> bool {
    c.label(crate::model::LABEL_SPEC_HASH) == Some(spec.hash.as_str())
}
