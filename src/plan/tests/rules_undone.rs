//! Rule 8's way back: a change undone is not tried again until the row
//! wants another spec (or, for a moving tag, another image), and a berth
//! restarted after the undo holds it back as this one did.

use serde_json::json;

use super::rules_replace::{digest, on_tag_digest_c};
use super::*;
use crate::model::{Reason, ResolvedImage, Status};

#[test]
fn a_rolled_back_change_is_not_retried_until_the_row_changes() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"A": "2"}));
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory.rolled_back_hash = Some(built(&r, &s).hash);
    let p = plan_at(&f, t0() + mins(1));
    assert!(p.actions.is_empty());
    assert_eq!(
        p.status.as_ref().map(|s| (s.status, s.reason)),
        Some((Status::Online, Some(Reason::RolledBack)))
    );
}

#[test]
fn an_undone_change_wanted_again_after_the_row_wanted_another_is_tried_afresh() {
    let s = Settings::test();
    let (old, new) = (row(1), row(1).with_env(json!({"A": "2"})));
    let cs = [container_for(&built(&old, &s), "c1")];
    let mut f = facts_for(&s, &new, &cs, &[]);
    f.memory.record_rollback(
        &built(&new, &s).hash,
        None,
        "the new container was not ready".into(),
        t0(),
    );
    // Held back while it is wanted.
    let held = plan_at(&f, t0() + mins(1));
    assert!(held.actions.is_empty());
    assert_eq!(reason(&held), Some(Reason::RolledBack));
    // The row goes back to what runs (a halt writes the pin back): the
    // undone change is no longer wanted, and is forgotten.
    let mut back = facts_for(&s, &old, &cs, &[]);
    back.memory = held.memory.clone();
    let served = plan_at(&back, t0() + mins(2));
    assert!(served.actions.is_empty());
    assert_eq!(reason(&served), None);
    assert_eq!(served.memory.rolled_back_hash, None);
    // Wanted again (the operator pins that digest again): a new request.
    f.memory = served.memory.clone();
    let again = plan_at(&f, t0() + mins(3));
    assert_eq!(again.desired_hash(), Some(built(&new, &s).hash.as_str()));
    // So is it after another change was wanted in between.
    let other = row(1).with_env(json!({"A": "3"}));
    let mut between = facts_for(&s, &other, &cs, &[]);
    between.memory = held.memory.clone();
    let replaced = plan_at(&between, t0() + mins(2));
    assert_eq!(replaced.memory.rolled_back_hash, None);
    f.memory = replaced.memory.clone();
    assert!(!plan_at(&f, t0() + mins(3)).actions.is_empty());
}

#[test]
fn a_replace_undone_by_the_executor_is_recorded_against_its_spec_hash() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"A": "2"}));
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let mut f = facts_for(&s, &r, &cs, &[]);
    let p = plan_at(&f, t0());
    let hash = p.desired_hash().expect("the replace creates a container");
    assert_eq!(hash, built(&r, &s).hash);
    let mut memory = p.memory.clone();
    memory.record_rollback(
        hash,
        None,
        "the new container exited with code 1".into(),
        t0(),
    );
    f.memory = memory;
    let again = plan_at(&f, t0() + mins(1));
    assert!(again.actions.is_empty());
    assert_eq!(
        again.status.and_then(|s| s.reason),
        Some(Reason::RolledBack)
    );
}

#[test]
fn a_moving_tags_undone_digest_is_not_tried_again_but_its_next_digest_is() {
    let s = Settings::test();
    let (r, cs) = on_tag_digest_c(&s);
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.image = ResolvedImage {
        digest: Some(digest('d')),
        id: None,
    };
    // The tag moved to d, whose replace was undone: the spec hash (the tag
    // is the image reference) is the same for every digest of the tag.
    let hash = built(&r, &s).hash;
    f.memory.record_rollback(
        &hash,
        Some(digest('d').to_string()),
        "the new container was not ready".into(),
        t0(),
    );
    let p = plan_at(&f, t0() + mins(1));
    assert!(p.actions.is_empty(), "{:?}", whys(&p));
    assert_eq!(reason(&p), Some(Reason::RolledBack));
    // The tag moves on to e: a change of its own, tried.
    f.image.digest = Some(digest('e'));
    let p = plan_at(&f, t0() + mins(2));
    assert_eq!(
        whys(&p)[0],
        "recreate: digest sha256:cccccccccccc… → sha256:eeeeeeeeeeee…"
    );
    // A rollback recorded without its image (an older trail) holds the
    // hash back whatever the digest.
    f.memory.rolled_back_image = None;
    assert!(plan_at(&f, t0() + mins(3)).actions.is_empty());

    // A berth restarted after the undo knows the image its container runs
    // (c), not the undone one: that pass keeps the undo, so the tag found
    // on d again at the next refresh is still held back.
    f.memory.rolled_back_image = Some(digest('d').to_string());
    f.image.digest = Some(digest('c'));
    let restarted = plan_at(&f, t0() + mins(4));
    assert!(restarted.actions.is_empty());
    f.memory = restarted.memory.clone();
    f.image.digest = Some(digest('d'));
    assert!(
        plan_at(&f, t0() + mins(5)).actions.is_empty(),
        "the undone digest is not tried again"
    );
}

#[test]
fn the_old_container_back_after_an_undo_is_not_timed_out_by_a_restarted_berth() {
    // A berth died as it put the old container back: the row still says
    // provisioning, the trail says the change was undone, and the old
    // container, started again, waits for its health check.
    let s = Settings::test();
    let mut r = row(1).with_env(json!({"A": "2"}));
    r.status = Some(Status::Provisioning);
    r.status_reason = Some(Reason::WaitingReady);
    r.desired_changed_at = t0() - TimeDelta::hours(1);
    let mut old = container_for(&built(&row(1), &s), "old");
    old.created = t0() - TimeDelta::hours(2);
    old.started_at = Some(t0() - TimeDelta::seconds(2));
    old.health = crate::model::Health::Starting;
    let cs = [old];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory.rolled_back_hash = Some(built(&r, &s).hash);
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
    let found = p.memory.clone();
    let with = |health| {
        let mut c = cs[0].clone();
        c.health = health;
        c
    };
    // Ready: the row says the change was undone.
    let healthy = [with(crate::model::Health::Healthy)];
    let mut f = facts_for(&s, &r, &healthy, &[]);
    f.memory = found.clone();
    let p = plan_at(&f, t0() + TimeDelta::seconds(5));
    assert_eq!(
        p.status.as_ref().map(|s| (s.status, s.reason)),
        Some((Status::Online, Some(Reason::RolledBack)))
    );
    // Never ready again: timed out a whole timeout after it was found.
    let unhealthy = [with(crate::model::Health::Unhealthy)];
    let mut f = facts_for(&s, &r, &unhealthy, &[]);
    f.memory = found;
    let p = plan_at(&f, t0() + TimeDelta::minutes(9));
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
    let p = plan_at(&f, t0() + TimeDelta::minutes(10));
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
}
