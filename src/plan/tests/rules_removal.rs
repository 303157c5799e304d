//! Rules 1–6 and 10: ownership, `paused`, unknown state, incomplete
//! knowledge, `removed`, orphans, `stopped`, duplicates.

use std::collections::BTreeMap;

use super::*;
use crate::model::{DesiredState, LABEL_HOST, Reason, Status};
use crate::plan::{Memory, StatusUpdate, Target};

fn status(p: &Plan) -> Option<(Status, Option<Reason>)> {
    p.status.as_ref().map(|s| (s.status, s.reason))
}

#[test]
fn a_same_named_container_without_the_managed_label_is_a_name_conflict_and_untouched() {
    let s = Settings::test();
    let r = row(1);
    let mut foreign = container_for(&built(&r, &s), "f1");
    foreign.labels = BTreeMap::from([("com.example".into(), "x".into())]);
    let cs = [foreign];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert!(p.actions.is_empty());
    assert_eq!(
        status(&p),
        Some((Status::Failed, Some(Reason::NameConflict)))
    );
    let detail = p.status.and_then(|s| s.detail).unwrap_or_default();
    assert!(
        detail.contains("without berth's ownership label"),
        "{detail}"
    );
}

#[test]
fn a_same_named_container_of_another_host_is_a_name_conflict() {
    let s = Settings::test();
    let r = row(1);
    let mut other = container_for(&built(&r, &s), "o1");
    other.labels.insert(LABEL_HOST.into(), "host-b".into());
    let cs = [other];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert!(p.actions.is_empty());
    assert_eq!(
        status(&p),
        Some((Status::Failed, Some(Reason::NameConflict)))
    );
}

#[test]
fn a_same_named_volume_with_other_labels_is_a_name_conflict() {
    let s = Settings::test();
    let r = row(1);
    let vs = [volume(wid(2), &wid(1).configs_volume(), "default")];
    let p = plan_at(&facts_for(&s, &r, &[], &vs), t0());
    assert!(p.actions.is_empty());
    assert_eq!(
        status(&p),
        Some((Status::Failed, Some(Reason::NameConflict)))
    );
}

#[test]
fn a_paused_row_is_reported_and_never_acted_on() {
    let s = Settings::test();
    let r = row(1).paused().with_state(DesiredState::Removed);
    let mut c = container_for(&built(&row(1), &s), "c1");
    c.state = ContainerState::Exited;
    let cs = [c];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert!(p.actions.is_empty());
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Paused)));
}

#[test]
fn unknown_docker_state_yields_no_action_and_a_retry() {
    let s = Settings::test();
    let r = row(1).with_state(DesiredState::Removed);
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.probes.docker_unknown = true;
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty());
    assert_eq!(p.status, None);
    assert!(p.requeue_after.is_some());
}

#[test]
fn a_removed_row_loses_its_container_then_its_volumes() {
    let s = Settings::test();
    let mut r = row(1).with_state(DesiredState::Removed);
    // Set by a transaction that began a minute before it committed.
    r.desired_changed_at = t0() - mins(1);
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let vs = [
        volume(wid(1), &wid(1).configs_volume(), "default"),
        volume(wid(1), &wid(1).workspace_volume(), "default"),
    ];
    // At once the container goes; the volumes only once `removed` held.
    let at_once = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert_eq!(ops(&at_once), ["remove_container"]);
    assert_eq!(status(&at_once), Some((Status::Stopped, None)));
    assert!(
        detail(&at_once).contains("the volumes go at"),
        "{}",
        detail(&at_once)
    );
    assert_eq!(
        at_once.requeue_after,
        Some(crate::plan::rules::REMOVED_HOLD.to_std().unwrap())
    );
    // The hold runs from when berth first saw `removed`, whatever the
    // row's own time says (the start of the transaction that set it).
    let mut f = facts_for(&s, &r, &cs, &vs);
    f.memory = at_once.memory.clone();
    let early = plan_at(
        &f,
        t0() + crate::plan::rules::REMOVED_HOLD - chrono::TimeDelta::seconds(1),
    );
    assert_eq!(ops(&early), ["remove_container"], "still held");
    let p = plan_at(&f, t0() + crate::plan::rules::REMOVED_HOLD);
    assert_eq!(
        ops(&p),
        ["remove_container", "remove_volume", "remove_volume"]
    );
    assert_eq!(whys(&p)[0], "remove: desired_state is removed");
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Removed)));
    assert_eq!(
        p.guarded_removals(),
        0,
        "operator intent is not counted by the guard"
    );
}

#[test]
fn an_orphan_goes_only_after_the_grace_period_and_a_second_sighting() {
    let s = Settings::test();
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let vs = [volume(wid(1), &wid(1).configs_volume(), "default")];
    let mut f = Facts::empty(&s, wid(1));
    f.containers = cs.iter().collect();
    f.volumes = vs.iter().collect();
    let first = plan_at(&f, t0());
    assert!(first.actions.is_empty(), "first sighting");
    assert_eq!(first.status, None);
    f.memory = first.memory.clone();
    let early = plan_at(&f, t0() + mins(1));
    assert!(
        early.actions.is_empty(),
        "second sighting inside the grace period"
    );
    f.memory = early.memory.clone();
    let late = plan_at(&f, t0() + mins(10));
    assert_eq!(ops(&late), ["remove_container"]);
    assert_eq!(whys(&late), ["remove orphan: no row for 10m"]);
    assert!(
        late.notes.iter().any(|n| n.contains("volumes kept")),
        "{:?}",
        late.notes
    );
}

#[test]
fn an_orphan_is_not_removed_while_either_snapshot_is_incomplete() {
    let s = Settings::test();
    let cs = [container_for(&built(&row(1), &s), "c1")];
    for (desired, observed) in [(false, true), (true, false)] {
        let mut f = Facts::empty(&s, wid(1));
        f.containers = cs.iter().collect();
        f.desired_complete = desired;
        f.observed_complete = observed;
        f.memory = Memory {
            orphan_since: Some(t0()),
            orphan_sightings: 5,
            ..Memory::default()
        };
        assert!(plan_at(&f, t0() + mins(60)).actions.is_empty());
    }
}

#[test]
fn a_stopped_row_stops_its_running_container_and_keeps_it() {
    let s = Settings::test();
    let r = row(1).with_state(DesiredState::Stopped);
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["stop"]);
    assert_eq!(whys(&p), ["stop: desired_state is stopped"]);
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Stopped)));

    let mut exited = cs[0].clone();
    exited.state = ContainerState::Exited;
    let cs = [exited];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert!(p.actions.is_empty());
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Stopped)));
}

#[test]
fn a_duplicate_is_removed_keeping_the_named_container() {
    let s = Settings::test();
    let r = row(1);
    let main = container_for(&built(&r, &s), "aaaaaaaaaaaaaaaa");
    let mut dup = main.clone();
    dup.id = "bbbbbbbbbbbbbbbb".into();
    dup.name = "ws-stray".into();
    let cs = [main, dup];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["remove_container"]);
    assert_eq!(whys(&p), ["remove duplicate: keeping aaaaaaaaaaaa"]);
    assert_eq!(
        p.actions[0].op.target(),
        Some(&Target::Id("bbbbbbbbbbbbbbbb".into()))
    );
    assert_eq!(p.guarded_removals(), 1);
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Online)));
}

#[test]
fn a_labelled_container_without_a_host_label_is_no_berths_to_remove() {
    let s = Settings::test();
    let r = row(1);
    let main = container_for(&built(&r, &s), "aaaaaaaaaaaaaaaa");
    let mut stray = main.clone();
    stray.id = "bbbbbbbbbbbbbbbb".into();
    stray.name = "someone-elses".into();
    stray.labels.remove(LABEL_HOST);
    let cs = [main, stray.clone()];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert!(p.actions.is_empty(), "{:?}", whys(&p));
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Online)));

    // Under the workspace's name it holds the name: a conflict, untouched.
    stray.name = wid(1).container_name();
    let cs = [stray];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert!(p.actions.is_empty(), "{:?}", whys(&p));
    assert_eq!(
        status(&p),
        Some((Status::Failed, Some(Reason::NameConflict)))
    );
}

#[test]
fn duplicates_without_the_name_keep_the_newest_matching_the_spec() {
    let s = Settings::test();
    let r = row(1);
    let spec = built(&r, &s);
    let mut good = container_for(&spec, "good");
    good.name = "odd-1".into();
    let mut stale = container_for(&spec, "stale");
    stale.name = "odd-2".into();
    stale.created = t0() + mins(5);
    stale
        .labels
        .insert(crate::model::LABEL_SPEC_HASH.into(), "v1:old".into());
    let cs = [good, stale];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(ops(&p), ["rename", "remove_container"]);
    assert_eq!(p.actions[0].op.target(), Some(&Target::Id("good".into())));
    assert_eq!(whys(&p)[1], "remove duplicate: keeping good");
}

#[test]
fn a_duplicate_is_not_removed_on_incomplete_knowledge() {
    let s = Settings::test();
    let r = row(1);
    let main = container_for(&built(&r, &s), "a");
    let mut dup = main.clone();
    dup.id = "b".into();
    dup.name = "ws-stray".into();
    let cs = [main, dup];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.desired_complete = false;
    assert_eq!(plan_at(&f, t0()).guarded_removals(), 0);
}

#[test]
fn a_stopped_row_that_cannot_make_a_spec_still_stops_its_container() {
    let s = Settings::test();
    let r = row(1)
        .with_state(DesiredState::Stopped)
        .with_env(serde_json::json!({"": "x"}));
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(whys(&p), ["stop: desired_state is stopped"]);
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Stopped)));
}

#[test]
fn a_removed_row_whose_name_a_stranger_holds_keeps_its_volumes() {
    // Found by the fixpoint property: the stranger may mount the volumes.
    let s = Settings::test();
    let r = row(1).with_state(DesiredState::Removed);
    let mut stranger = container_for(&built(&row(1), &s), "f1");
    stranger.labels.clear();
    let cs = [stranger];
    let vs = [volume(wid(1), &wid(1).configs_volume(), "default")];
    let p = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert!(p.actions.is_empty());
    assert_eq!(
        status(&p),
        Some((Status::Failed, Some(Reason::NameConflict)))
    );
    let detail = p.status.and_then(|s| s.detail).unwrap_or_default();
    assert!(
        detail.starts_with("volumes kept while container"),
        "{detail}"
    );
}
