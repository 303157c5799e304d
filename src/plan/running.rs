//! Rules 6–9 for a row that wants its container running: create a missing
//! container, replace a changed one stop-first, start a stopped one with
//! backoff, restart once per `restart_epoch`, judge readiness and the
//! provision timeout.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ContainerSpec, ContainerState, Health, ImageSource, ObservedContainer, Reason, Status,
    WorkspaceRow,
};

use super::StatusUpdate;
use super::change::{change, stale_session};
use super::current::{current, timed_out};
use super::ready::{after, since};
use super::rules::Mine;
use super::{Change, Facts, Failure, Memory, Op, Phase, Plan, Restore, Target, Why};

/// The provision clock starts at the row's last desired change, or later
/// when berth began provisioning on its own (a vanished container, a new
/// tag digest); the deadline is that plus the runtime's timeout.
pub(super) fn deadline(f: &Facts, row: &WorkspaceRow, memory: &Memory) -> DateTime<Utc> {
    let start = memory
        .provisioning_since
        .map_or(row.desired_changed_at, |s| s.max(row.desired_changed_at));
    after(start, f.provision_timeout)
}

/// Marks the start of a provisioning attempt. A desired change berth has
/// not yet acted on (`observed_generation` behind `generation`) keeps its
/// own time, so queueing does not stretch the timeout; for a workspace
/// without a container (`resume`), an attempt the row shows under way for
/// its generation (`provisioning` since its last status change: a berth
/// restarted mid-attempt has no memory of it) keeps that time, so restarts
/// do not stretch its outage either; anything else (a vanished container,
/// a new tag digest, a replace tried again while the old container serves,
/// a change whose deadline passed while no berth ran) starts the clock now.
fn start_clock(
    f: &Facts,
    row: &WorkspaceRow,
    memory: &mut Memory,
    now: DateTime<Utc>,
    resume: bool,
) {
    let in_time = |t: DateTime<Utc>| after(t, f.provision_timeout) > now;
    let start = if row.observed_generation < row.generation {
        Some(row.desired_changed_at)
    } else if resume && row.status == Some(Status::Provisioning) {
        row.status_changed_at
    } else {
        None
    }
    .filter(|t| in_time(*t) && *t <= now)
    .unwrap_or(now);
    memory.provisioning_since.get_or_insert(start);
}

/// The note for a workspace whose volumes are gone while its row still
/// had a container: its data is gone, and the create makes them anew.
pub fn volumes_gone_note(names: &[&str]) -> String {
    format!(
        "volumes gone while the row still had a container: made anew, empty: {}",
        names.join(", ")
    )
}

pub(super) fn running(
    f: &Facts,
    row: &WorkspaceRow,
    spec: &ContainerSpec,
    main: Option<&ObservedContainer>,
    mine: &Mine,
    now: DateTime<Utc>,
    p: &mut Plan,
) {
    let Some(c) = main else {
        return create(f, row, spec, mine, now, p);
    };
    match c.state {
        ContainerState::Removing => {
            p.requeue(Duration::from_secs(2));
            return;
        }
        ContainerState::Dead => {
            p.push(
                Op::RemoveContainer {
                    target: Target::Id(c.id.clone()),
                },
                Why::Dead,
            );
            p.status = Some(StatusUpdate::reason(Reason::Creating, None));
            p.requeue(Duration::from_secs(1));
            return;
        }
        _ => {}
    }
    match change(f, row, spec, c, mine) {
        Some(_)
            if p.memory
                .undid(&spec.hash, super::facts::wanted_image(f, spec).as_deref()) =>
        {
            current(f, row, Some(spec), c, true, now, p);
        }
        Some(change) => {
            p.memory.forget_rollback_for(&spec.hash);
            replace(f, row, spec, c, change, mine, now, p);
        }
        None => {
            p.memory.forget_rollback_for(&spec.hash);
            current(f, row, Some(spec), c, false, now, p);
        }
    }
}

/// A failure for this spec whose retry time has not come.
pub(super) fn backing_off<'m>(
    memory: &'m Memory,
    spec: &ContainerSpec,
    now: DateTime<Utc>,
) -> Option<&'m Failure> {
    memory
        .failure
        .as_ref()
        .filter(|fl| fl.hash == spec.hash && fl.retry_at > now)
}

fn first_phase(spec: &ContainerSpec) -> (Phase, Reason) {
    match spec.image_source {
        ImageSource::LocalBuild { .. } => (Phase::Build, Reason::Building),
        _ => (Phase::Pull, Reason::Pulling),
    }
}

/// The reason a pass that makes the container shows as it begins: the
/// image to make local first (`pulling`, `building`), or, with the image
/// known local already, the container to make (`creating`: a replace's
/// stop and rename, the create), so a stop that takes its time does not
/// read as registry trouble.
fn first_reason(f: &Facts, spec: &ContainerSpec) -> Reason {
    if f.image.id.is_some() {
        Reason::Creating
    } else {
        first_phase(spec).1
    }
}

/// Rule 7: no container → ensure image, volumes, create, fill, start.
fn create(
    f: &Facts,
    row: &WorkspaceRow,
    spec: &ContainerSpec,
    mine: &Mine,
    now: DateTime<Utc>,
    p: &mut Plan,
) {
    if !f.observed_complete {
        p.notes
            .push("create waits for a complete container list".into());
        p.requeue(Duration::from_secs(2));
        return;
    }
    if let Some(fl) = backing_off(&p.memory, spec, now) {
        p.status = Some(StatusUpdate::reason(fl.reason, Some(fl.message.clone())));
        p.requeue(since(now, fl.retry_at));
        return;
    }
    if let Some(detail) = template_missing(f, spec) {
        p.status = Some(StatusUpdate::reason(Reason::InvalidSpec, Some(detail)));
        return;
    }
    if config_missing(f, spec, mine) {
        let detail = "no config.yaml in config_files, template_path or the configs volume";
        p.status = Some(StatusUpdate::reason(
            Reason::ConfigMissing,
            Some(detail.into()),
        ));
        return;
    }
    start_clock(f, row, &mut p.memory, now, true);
    let deadline = deadline(f, row, &p.memory);
    if now >= deadline {
        // A failure that is itself final (the daemon refused to start it,
        // no config.yaml) stays the reason; otherwise the stalled phase is
        // named.
        if let Some(fl) = p
            .memory
            .failure
            .as_ref()
            .filter(|fl| fl.hash == spec.hash && fl.reason.status() == Status::Failed)
        {
            let detail = format!("{} (given up after the provision timeout)", fl.message);
            p.status = Some(StatusUpdate::reason(fl.reason, Some(detail)));
            return;
        }
        let phase = p
            .memory
            .failure
            .as_ref()
            .map_or(first_phase(spec).0, |fl| fl.phase);
        return timed_out(f, phase, p);
    }
    // A workspace that had a container, whose volumes are gone too (removed
    // by hand), gets new empty ones: the trail says so, once.
    if row.container_id.is_some() {
        let gone: Vec<&str> = spec
            .volumes
            .iter()
            .map(|v| v.name.as_str())
            .filter(|name| !mine.volumes.iter().any(|o| o.name == *name))
            .collect();
        if !gone.is_empty() {
            p.notes.push(volumes_gone_note(&gone));
        }
    }
    p.push(ensure_image(spec), Why::Missing);
    if let Some((from, to)) = stale_session(f, row, spec, mine) {
        let name = f.id.sessions_volume();
        p.push(
            Op::RemoveVolume {
                name,
                below_epoch: Some(to),
            },
            Why::Replace(Change::SessionEpoch { from, to }),
        );
    }
    for v in &spec.volumes {
        p.push(Op::EnsureVolume(v.clone()), Why::Missing);
    }
    let from = p.actions.len();
    fill_and_start(spec, deadline, Why::Missing, p);
    let undo = vec![super::Action::new(
        Op::RemoveContainer {
            target: Target::Created,
        },
        Why::Undo,
    )];
    p.restore = Some(Restore {
        from,
        actions: undo,
        previous: None,
    });
    p.status = Some(StatusUpdate::reason(first_reason(f, spec), None));
    p.requeue(since(now, deadline));
}

fn ensure_image(spec: &ContainerSpec) -> Op {
    Op::EnsureImage {
        image: spec.image.clone(),
        source: spec.image_source.clone(),
        platform: spec.platform.clone(),
        known: spec.known_image(),
    }
}

fn fill_and_start(spec: &ContainerSpec, deadline: DateTime<Utc>, why: Why, p: &mut Plan) {
    p.push(Op::Create(Box::new(spec.clone())), why.clone());
    let files = spec.files.clone();
    p.push(
        Op::WriteFiles {
            target: Target::Created,
            files,
        },
        why.clone(),
    );
    p.push(
        Op::Start {
            target: Target::Created,
        },
        why.clone(),
    );
    p.push(
        Op::WaitReady {
            target: Target::Created,
            deadline,
        },
        why,
    );
}

/// Why the files cannot be written: the template dir they are copied
/// from is not there (nothing is created until it is).
fn template_missing(f: &Facts, spec: &ContainerSpec) -> Option<String> {
    let dir = spec.files.template_path.as_ref()?;
    (f.probes.template_dir == Some(false)).then(|| {
        format!(
            "template_path {} is not a directory berth can read",
            dir.display()
        )
    })
}

/// `config_missing` only when every source is known to lack config.yaml
/// (an unprobed source counts as present: no failure on a guess). An
/// existing configs volume is looked into by the executor once the files
/// are written, before the start (`ActError::ConfigMissing`).
fn config_missing(f: &Facts, spec: &ContainerSpec, mine: &Mine) -> bool {
    let in_files = spec
        .files
        .files
        .get("config.yaml")
        .is_some_and(|c| !c.expose().is_empty());
    let in_template =
        spec.files.template_path.is_some() && f.probes.template_has_config != Some(false);
    let in_volume = mine.volumes.iter().any(|v| v.name == f.id.configs_volume());
    !(in_files || in_template || in_volume)
}

/// Rule 8: stop-first replace on the same volumes, with its way back.
#[allow(clippy::too_many_arguments)]
fn replace(
    f: &Facts,
    row: &WorkspaceRow,
    spec: &ContainerSpec,
    old: &ObservedContainer,
    change: Change,
    mine: &Mine,
    now: DateTime<Utc>,
    p: &mut Plan,
) {
    if !f.observed_complete {
        p.notes
            .push("replace waits for a complete container list".into());
        return current(f, row, Some(spec), old, false, now, p);
    }
    // A container paused in Docker was frozen on purpose: no replace
    // stops it; the change waits until it is unpaused.
    if old.state == ContainerState::Paused {
        p.notes
            .push("container is Paused in Docker: berth leaves it so".into());
        let detail = format!(
            "{change} waits: the container is paused in Docker (docker pause) and answers nothing until `docker unpause`"
        );
        p.status = Some(StatusUpdate::reason(Reason::ChangeBlocked, Some(detail)));
        return;
    }
    // A blocked change has touched nothing and the old container serves:
    // no attempt is under way, so none is timed. The next try, however
    // long the block lasted, gets the whole provision timeout. An old
    // container found down meanwhile (stopped by hand, say) or failing its
    // health check is looked after as any other (started, restarted) while
    // the change waits, and the change keeps its backoff.
    let retry_at = backing_off(&p.memory, spec, now).map(|fl| fl.retry_at);
    let blocked = retry_at.is_some() || template_missing(f, spec).is_some();
    if blocked && (old.state != ContainerState::Running || old.health == Health::Unhealthy) {
        let failure = p.memory.failure.clone();
        p.memory.provisioning_since = None;
        current(f, row, Some(spec), old, false, now, p);
        p.memory.failure = failure;
        if let Some(at) = retry_at {
            p.requeue(since(now, at));
        }
        return;
    }
    if let Some(fl) = backing_off(&p.memory, spec, now) {
        let detail = format!("{change} is blocked: {}", fl.message);
        let retry_at = fl.retry_at;
        p.status = Some(StatusUpdate::reason(Reason::ChangeBlocked, Some(detail)));
        p.memory.provisioning_since = None;
        p.requeue(since(now, retry_at));
        return;
    }
    if let Some(missing) = template_missing(f, spec) {
        // The old container keeps serving until the files can be written.
        let detail = format!("{change} is blocked: {missing}");
        p.status = Some(StatusUpdate::reason(Reason::ChangeBlocked, Some(detail)));
        p.memory.provisioning_since = None;
        return;
    }
    start_clock(f, row, &mut p.memory, now, false);
    let deadline = deadline(f, row, &p.memory);
    let why = Why::Replace(change);
    let old_target = || Target::Id(old.id.clone());
    // The sessions go in a replace of their own: discarding them removes
    // the old container before the new one is proven, which is only
    // harmless when the new one is the old one's spec. A material change
    // comes first, with its way back; the next pass discards the sessions.
    let session = match why {
        Why::Replace(Change::SessionEpoch { .. }) => stale_session(f, row, spec, mine),
        _ => None,
    };
    p.push(ensure_image(spec), why.clone());
    p.push(
        Op::Preflight {
            binds: spec.material.binds.clone(),
            others: spec.other_dirs.clone(),
            network: spec.material.network_mode.clone(),
        },
        why.clone(),
    );
    let from = p.actions.len();
    p.push(
        Op::Stop {
            target: old_target(),
            timeout: f.settings.stop_timeout,
        },
        why.clone(),
    );
    p.push(
        Op::Rename {
            target: old_target(),
            to: f.id.prev_container_name(),
        },
        why.clone(),
    );
    if let Some((from_epoch, to)) = session {
        // Docker removes no volume a container still holds: discarding the
        // sessions means the old container goes first, without a way back.
        p.push(
            Op::RemoveContainer {
                target: old_target(),
            },
            why.clone(),
        );
        let change = Change::SessionEpoch {
            from: from_epoch,
            to,
        };
        p.push(
            Op::RemoveVolume {
                name: f.id.sessions_volume(),
                below_epoch: Some(to),
            },
            Why::Replace(change),
        );
    }
    for v in &spec.volumes {
        p.push(Op::EnsureVolume(v.clone()), why.clone());
    }
    let created_at = p.actions.len();
    fill_and_start(spec, deadline, why.clone(), p);
    let step = |op, why: &Why| super::Action::new(op, why.clone());
    p.restore = Some(if session.is_some() {
        let undo = vec![step(
            Op::RemoveContainer {
                target: Target::Created,
            },
            &Why::Undo,
        )];
        Restore {
            from: created_at,
            actions: undo,
            previous: None,
        }
    } else {
        p.push(
            Op::RemoveContainer {
                target: old_target(),
            },
            why,
        );
        let undo = vec![
            step(
                Op::RemoveContainer {
                    target: Target::Created,
                },
                &Why::Restore,
            ),
            step(
                Op::Rename {
                    target: old_target(),
                    to: f.id.container_name(),
                },
                &Why::Restore,
            ),
            step(
                Op::Start {
                    target: old_target(),
                },
                &Why::Restore,
            ),
        ];
        Restore {
            from,
            actions: undo,
            previous: Some(old.id.clone()),
        }
    });
    p.status = Some(StatusUpdate::reason(first_reason(f, spec), None));
    p.requeue(since(now, deadline));
}
