//! Rule 8 for a replace found part way (a `-prev` container beside, or
//! instead of, the new one): finished, waited for, undone, and timed from
//! what a restarted berth can know.

use chrono::TimeDelta;
use serde_json::json;

use super::*;
use crate::model::{ContainerState, Reason, Status};
use crate::plan::{Change, Phase, Target};

#[test]
fn an_interrupted_replace_finishes_when_the_new_container_is_ready() {
    let s = Settings::test();
    let r = row(1);
    let new = container_for(&built(&r, &s), "new");
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [new, old];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["remove_container"]);
    assert_eq!(whys(&p), ["finish replace: the new container is ready"]);
}

#[test]
fn an_interrupted_replace_whose_new_container_failed_is_rolled_back() {
    let s = Settings::test();
    let r = row(1);
    let mut new = container_for(&built(&r, &s), "new");
    new.state = ContainerState::Exited;
    new.exit_code = Some(3);
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [new, old];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["remove_container", "rename", "start"]);
    assert_eq!(p.actions[0].op.target(), Some(&Target::Id("new".into())));
    assert_eq!(reason(&p), Some(Reason::RolledBack));
    assert_eq!(
        detail(&p),
        "the new container exited with code 3; the previous one serves"
    );
    assert_eq!(p.memory.rolled_back_hash, Some(built(&r, &s).hash));
    assert_eq!(
        p.memory.ready_container.as_deref(),
        Some("old"),
        "the restored container served before: no provision deadline for it"
    );

    // Once the old one serves again, the row still says why.
    let mut back = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    back.started_at = Some(t0() + mins(1));
    let cs = [back];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory = p.memory;
    let later = plan_at(&f, t0() + mins(5));
    assert_eq!(reason(&later), Some(Reason::RolledBack));
    assert_eq!(
        detail(&later),
        "the new container exited with code 3; the wanted change was undone and is tried again when the row or its image changes"
    );
}

#[test]
fn a_new_container_being_removed_decides_nothing_and_the_change_is_tried_again() {
    let s = Settings::test();
    let r = row(1);
    // Removed by hand during the replace: Docker shows it `removing`.
    let mut new = container_for(&built(&r, &s), "new");
    new.state = ContainerState::Removing;
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let p = plan_at(&facts_for(&s, &r, &[new, old.clone()], &[]), t0());
    assert!(p.actions.is_empty(), "{:?}", ops(&p));
    assert_eq!(p.memory.rolled_back_hash, None, "no verdict on the spec");
    assert!(p.requeue_after.is_some());
    // Once it is gone the old one comes back and the change stays wanted.
    let mut f = facts_for(&s, &r, std::slice::from_ref(&old), &[]);
    f.memory = p.memory;
    let p = plan_at(&f, t0());
    assert_eq!(ops(&p), ["rename", "start"]);
    assert_eq!(p.memory.rolled_back_hash, None);
    assert!(p.resumed.is_some(), "the change is tried again");
}

#[test]
fn an_interrupted_replace_waits_for_a_new_container_until_the_deadline_and_says_so() {
    let s = Settings::test();
    let r = row(1);
    let mut new = container_for(&built(&r, &s), "new");
    new.health = crate::model::Health::Unhealthy;
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [new, old];
    let f = facts_for(&s, &r, &cs, &[]);
    let waiting = plan_at(&f, t0());
    assert!(
        waiting.actions.is_empty(),
        "unhealthy is not ready yet, not failed"
    );
    assert_eq!(reason(&waiting), Some(Reason::WaitingReady));
    assert!(
        detail(&waiting).contains("health check reports unhealthy"),
        "the row says what the engine already knows: {}",
        detail(&waiting)
    );
    let late = plan_at(&f, t0() + f.provision_timeout + mins(1));
    assert_eq!(ops(&late), ["remove_container", "rename", "start"]);
    assert!(
        detail(&late).starts_with("the new container was not ready by "),
        "{}",
        detail(&late)
    );
}

#[test]
fn an_interrupted_replace_whose_new_container_was_never_started_goes_on() {
    let s = Settings::test();
    let r = row(1);
    let mut new = container_for(&built(&r, &s), "new");
    new.state = ContainerState::Created;
    new.started_at = None;
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [new, old];
    let mut f = facts_for(&s, &r, &cs, &[]);
    let p = plan_at(&f, t0());
    assert_eq!(ops(&p), ["write_files", "start"]);
    assert_eq!(p.actions[1].op.target(), Some(&Target::Id("new".into())));
    assert_eq!(reason(&p), Some(Reason::Starting));
    assert_eq!(p.memory.rolled_back_hash, None, "nothing was given up");
    assert!(
        matches!(p.resumed, Some(Change::Fields(_))),
        "the replace under way is named for its rollout: {:?}",
        p.resumed
    );

    // A failed fill waits out its retry time; past the deadline the old
    // container comes back.
    f.memory.failure = Some(failure(
        Reason::ConfigMissing,
        Phase::Create,
        "no config.yaml",
        &built(&r, &s).hash,
    ));
    let blocked = plan_at(&f, t0());
    assert!(blocked.actions.is_empty());
    assert_eq!(reason(&blocked), Some(Reason::ChangeBlocked));
    let late = plan_at(&f, t0() + f.provision_timeout + mins(1));
    assert_eq!(ops(&late), ["remove_container", "rename", "start"]);
    assert_eq!(
        late.memory.rolled_back_hash,
        Some(built(&r, &s).hash),
        "its own failure holds the spec back"
    );

    // Found past the deadline with no failure of its own (a berth was down
    // all that time): started now, and timed from now.
    f.memory.failure = None;
    let at = t0() + f.provision_timeout + mins(1);
    let late = plan_at(&f, at);
    assert_eq!(ops(&late), ["write_files", "start"]);
    assert_eq!(late.memory.provisioning_since, Some(at));
    assert!(late.resumed.is_some(), "it keeps its place in a rollout");

    // Its own clock ran out while it never started: undone, not blamed.
    f.memory = late.memory.clone();
    let later = plan_at(&f, at + f.provision_timeout + mins(1));
    assert_eq!(ops(&later), ["remove_container", "rename", "start"]);
    assert_eq!(later.memory.rolled_back_hash, None);
    assert!(
        detail(&later).contains("was not started by"),
        "{}",
        detail(&later)
    );
}

#[test]
fn a_replace_cut_short_before_its_new_container_keeps_its_rollout_place() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"A": "2"}));
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [old];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["rename", "start"]);
    assert!(
        matches!(p.resumed, Some(Change::Fields(_))),
        "named for its rollout: {:?}",
        p.resumed
    );
    // A stopped row puts the old one back and is in no rollout.
    let stopped = r.clone().with_state(crate::model::DesiredState::Stopped);
    let p = plan_at(&facts_for(&s, &stopped, &cs, &[]), t0());
    assert_eq!(p.resumed, None);
}

#[test]
fn a_restarted_berth_times_a_replace_under_way_from_its_new_container_not_the_rows_change() {
    let s = Settings::test();
    // The row changed long ago; a pin edit (which changes no row) started
    // the replace a few seconds before berth restarted with no memory.
    let mut r = row(1);
    r.desired_changed_at = t0() - mins(60);
    let mut new = container_for(&built(&r, &s), "new");
    new.created = t0() - TimeDelta::seconds(3);
    new.started_at = Some(t0() - TimeDelta::seconds(3));
    new.health = crate::model::Health::Starting;
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [new, old];
    let f = facts_for(&s, &r, &cs, &[]);
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty(), "undone at once: {:?}", ops(&p));
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
    let late = plan_at(&f, t0() + f.provision_timeout);
    assert_eq!(
        ops(&late),
        ["remove_container", "rename", "start"],
        "undone at its own deadline"
    );
}

#[test]
fn the_old_containers_crash_loop_is_not_held_against_its_replacement() {
    let s = Settings::test();
    let r = row(1);
    let mut new = container_for(&built(&r, &s), "new");
    new.health = crate::model::Health::Starting;
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [new, old];
    let mut f = facts_for(&s, &r, &cs, &[]);
    // The old container restarted in a loop: that is why the row changed.
    f.memory.restart_seen = Some(("old".into(), 9));
    f.memory.restarts = vec![t0(); 9];
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty(), "{:?}", ops(&p));
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
    assert!(p.memory.restarts.is_empty());
    assert_eq!(p.memory.restart_seen, Some(("new".into(), 0)));
}

#[test]
fn a_replace_interrupted_before_create_brings_the_old_container_back() {
    let s = Settings::test();
    let r = row(1);
    let mut old = container_for(&built(&r, &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [old];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["rename", "start"]);
    assert_eq!(
        p.actions[0].op,
        Op::Rename {
            target: Target::Id("old".into()),
            to: wid(1).container_name()
        }
    );
    assert!(detail(&p).contains("tried again"), "{}", detail(&p));
}

#[test]
fn a_restore_cut_short_is_finished_and_says_the_change_stays_undone() {
    let s = Settings::test();
    let (before, r) = (row(1), row(1).with_env(json!({"A": "2"})));
    let mut old = container_for(&built(&before, &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [old];
    let mut f = facts_for(&s, &r, &cs, &[]);
    // The trail says the change was undone: berth died as it put the old
    // container back.
    f.memory.record_rollback(
        &built(&r, &s).hash,
        None,
        "the new container was not ready".into(),
        t0(),
    );
    let p = plan_at(&f, t0() + mins(1));
    assert_eq!(ops(&p), ["rename", "start"]);
    let said = detail(&p);
    assert!(
        said.contains("not tried again") && said.contains("was not ready"),
        "{said}"
    );
}

#[test]
fn an_interrupted_replace_of_a_stopped_row_renames_the_old_container_without_starting_it() {
    let s = Settings::test();
    let r = row(1).with_state(crate::model::DesiredState::Stopped);
    let mut old = container_for(&built(&row(1), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let cs = [old];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["rename"]);
    assert_eq!(p.status.map(|s| s.status), Some(Status::Stopped));
}

#[test]
fn a_row_stopped_during_a_replace_keeps_the_proven_old_container_not_the_new_one() {
    let s = Settings::test();
    let r = row(1)
        .with_env(json!({"A": "2"}))
        .with_state(crate::model::DesiredState::Stopped);
    let mut old = container_for(&built(&row(1), &s), "old");
    old.name = wid(1).prev_container_name();
    old.state = ContainerState::Exited;
    let new = container_for(&built(&r, &s), "new");
    let cs = [old, new];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["remove_container", "rename"], "{:?}", whys(&p));
    assert_eq!(
        p.actions[0].op,
        Op::RemoveContainer {
            target: Target::Id("new".into())
        }
    );
    assert_eq!(
        p.actions[1].op,
        Op::Rename {
            target: Target::Id("old".into()),
            to: wid(1).container_name()
        }
    );
    assert_eq!(p.guarded_removals(), 0, "a stop is operator intent");
    assert_eq!(p.status.map(|s| s.status), Some(Status::Stopped));
}

#[test]
fn a_replaces_old_container_renamed_away_is_still_the_way_back_not_a_duplicate() {
    let s = Settings::test();
    let r = row(1);
    let mut new = container_for(&built(&r, &s), "new");
    new.health = crate::model::Health::Unhealthy;
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = "renamed-by-hand".into();
    old.state = ContainerState::Exited;
    old.created = new.created - mins(5);
    let cs = [new.clone(), old.clone()];
    let f = facts_for(&s, &r, &cs, &[]);
    let waiting = plan_at(&f, t0());
    assert!(waiting.actions.is_empty(), "{:?}", ops(&waiting));
    assert_eq!(reason(&waiting), Some(Reason::WaitingReady));
    let late = plan_at(&f, t0() + f.provision_timeout + mins(1));
    assert_eq!(ops(&late), ["remove_container", "rename", "start"]);
    assert_eq!(late.actions[0].op.target(), Some(&Target::Id("new".into())));
    assert_eq!(late.actions[2].op.target(), Some(&Target::Id("old".into())));

    // Once the new one is proven ready, the old one may go.
    new.health = crate::model::Health::Healthy;
    let cs = [new.clone(), old.clone()];
    let done = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&done), ["remove_container"]);
    assert_eq!(done.actions[0].op.target(), Some(&Target::Id("old".into())));
    assert_eq!(whys(&done), ["remove duplicate: keeping new"]);

    // A copy of the current spec beside it is a duplicate, whatever its
    // state.
    let mut copy = container_for(&built(&r, &s), "copy");
    copy.name = "another-name".into();
    copy.state = ContainerState::Exited;
    copy.created = new.created - mins(5);
    new.health = crate::model::Health::Unhealthy;
    let cs = [new, copy];
    let dup = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&dup), ["remove_container"]);
    assert_eq!(dup.actions[0].op.target(), Some(&Target::Id("copy".into())));
}

#[test]
fn a_renamed_old_container_stays_the_way_back_when_the_row_changes_again_or_it_runs() {
    let s = Settings::test();
    let first_edit = row(1).with_env(json!({"B": "1"}));
    let mut new = container_for(&built(&first_edit, &s), "new");
    new.health = crate::model::Health::Unhealthy;
    let mut old = container_for(&built(&row(1).with_env(json!({"A": "1"})), &s), "old");
    old.name = "renamed-by-hand".into();
    old.state = ContainerState::Exited;
    old.created = new.created - mins(5);

    // The row changed again while the new one was unproven: the old one is
    // brought back, the new one goes; the old one is never a duplicate.
    let again = row(1).with_env(json!({"B": "2"}));
    let cs = [new.clone(), old.clone()];
    let p = plan_at(&facts_for(&s, &again, &cs, &[]), t0());
    assert_eq!(
        ops(&p),
        ["remove_container", "rename", "start"],
        "{:?}",
        whys(&p)
    );
    assert_eq!(p.actions[0].op.target(), Some(&Target::Id("new".into())));
    assert_eq!(p.actions[2].op.target(), Some(&Target::Id("old".into())));

    // Started again by hand beside the unproven new one: kept, and the
    // way back once the new one runs out of time.
    old.state = ContainerState::Running;
    let cs = [new.clone(), old.clone()];
    let f = facts_for(&s, &first_edit, &cs, &[]);
    let waiting = plan_at(&f, t0());
    assert!(waiting.actions.is_empty(), "{:?}", whys(&waiting));
    let late = plan_at(&f, t0() + f.provision_timeout + mins(1));
    assert_eq!(ops(&late), ["remove_container", "rename", "start"]);
    assert_eq!(late.actions[0].op.target(), Some(&Target::Id("new".into())));
}
