//! A replace found part way (a `-prev` container beside, or instead of,
//! the new one): finished, waited for, or undone, and a rollout's place
//! kept for it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ContainerSpec, ContainerState, DesiredState, ObservedContainer, Reason, Status, WorkspaceRow,
};

use super::StatusUpdate;
use super::ready::{Readiness, crash_looping, readiness, since, track_restarts};
use super::rules::{Mine, matches_spec};
use super::{Facts, Op, Plan, Target, Why, running};

/// A `-prev` container means a replace stopped part way: finish it when
/// the new container is ready, wait while it may still become ready, else
/// bring the old one back under its name.
#[allow(clippy::too_many_arguments)]
pub(super) fn interrupted_replace(
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
    if main.is_some_and(|c| c.state == ContainerState::Removing) {
        // Going (removed by hand, or by an undo under way): it decides
        // nothing about the spec. Once it is gone the old container comes
        // back and the change is tried again.
        p.requeue(Duration::from_secs(2));
        return;
    }
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
        // A restore cut short (the change already undone, as the trail
        // says) is finished, and the change stays undone; any other
        // replace cut short is tried again.
        let undone = p
            .memory
            .undid(&spec.hash, super::facts::wanted_image(f, spec).as_deref());
        p.status = Some(if row.desired_state == DesiredState::Running {
            let detail = if undone {
                let why = p
                    .memory
                    .rolled_back_why
                    .as_deref()
                    .map_or(String::new(), |w| format!(" ({w})"));
                format!(
                    "the undoing of a replace{why} was cut short and is finished; the change is not tried again until the row or its image changes"
                )
            } else {
                "an interrupted replace was undone; the change is tried again".to_string()
            };
            StatusUpdate::reason(Reason::Starting, Some(detail))
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
        p.status = Some(StatusUpdate::reason(
            Reason::WaitingReady,
            super::ready::waiting_detail(main),
        ));
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
            "the row wants another spec than the new container's (the row or its image changed while the replace was under way)".to_string()
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
            let image = super::facts::wanted_image(f, spec);
            p.memory.record_rollback(&spec.hash, image, why, now);
        }
        p.status = Some(StatusUpdate::reason(Reason::RolledBack, Some(detail)));
    }
}
