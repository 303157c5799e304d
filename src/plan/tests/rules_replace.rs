//! Rule 8: what makes a replace, its order and way back, legacy adoption,
//! a blocked change (one undone: `rules_undone`; one found part way:
//! `rules_interrupted`).

use serde_json::json;

use super::*;
use crate::model::{
    Digest, LABEL_IMAGE_DIGEST, LABEL_SESSION_EPOCH, LABEL_SPEC_HASH, Reason, ResolvedImage, Status,
};
use crate::plan::{Change, Failure, Phase, Target};

pub(super) fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).expect("digest")
}

#[test]
fn a_new_pin_replaces_stop_first_with_a_way_back() {
    let s = Settings::test();
    let mut cat = Catalogue::seeded();
    cat.set_pin("langgraph", "stable", digest('a'));
    let r = row(1);
    let old = spec(&r, &cat, &s).expect("spec");
    cat.set_pin("langgraph", "stable", digest('b'));
    let cs = [container_for(&old, "old-container-id")];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.spec = Some(spec(&r, &cat, &s));
    let p = plan_at(&f, t0());
    assert_eq!(
        ops(&p),
        [
            "ensure_image",
            "preflight",
            "stop",
            "rename",
            "ensure_volume",
            "ensure_volume",
            "create",
            "write_files",
            "start",
            "wait_ready",
            "remove_container"
        ]
    );
    assert_eq!(
        whys(&p)[0],
        "recreate: digest sha256:aaaaaaaaaaaa… → sha256:bbbbbbbbbbbb…"
    );
    let old_id = Target::Id("old-container-id".into());
    assert_eq!(
        p.actions[3].op,
        Op::Rename {
            target: old_id.clone(),
            to: wid(1).prev_container_name()
        }
    );
    assert_eq!(p.actions[10].op.target(), Some(&old_id));
    let restore = p.restore.expect("restore path");
    assert_eq!(
        restore.from, 2,
        "the way back starts at the stop, after the checks"
    );
    assert_eq!(restore.previous.as_deref(), Some("old-container-id"));
    let undo: Vec<_> = restore.actions.iter().map(|a| a.op.clone()).collect();
    assert_eq!(
        undo,
        [
            Op::RemoveContainer {
                target: Target::Created
            },
            Op::Rename {
                target: old_id.clone(),
                to: wid(1).container_name()
            },
            Op::Start { target: old_id },
        ]
    );
}

#[test]
fn an_env_change_names_the_field_not_the_value() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"KEY": "old-secret"}));
    let cs = [container_for(&built(&r, &s), "c1")];
    let changed = row(1).with_env(json!({"KEY": "new-secret"}));
    let p = plan_at(&facts_for(&s, &changed, &cs, &[]), t0());
    assert_eq!(whys(&p)[0], "recreate: env changed");
}

/// Workspace 1 on a moving tag, its container made from digest c.
pub(super) fn on_tag_digest_c(
    s: &Settings,
) -> (WorkspaceRow, [crate::model::ObservedContainer; 1]) {
    let r = row(1);
    let mut c = container_for(&built(&r, s), "c1");
    c.labels
        .insert(LABEL_IMAGE_DIGEST.into(), digest('c').to_string());
    (r, [c])
}

#[test]
fn a_moving_tag_with_a_new_digest_is_a_spec_change() {
    let s = Settings::test();
    let (r, cs) = on_tag_digest_c(&s);
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.image = ResolvedImage {
        digest: Some(digest('c')),
        id: None,
    };
    assert!(
        plan_at(&f, t0()).actions.is_empty(),
        "same digest: nothing to do"
    );
    f.image.digest = Some(digest('d'));
    let p = plan_at(&f, t0());
    assert_eq!(
        whys(&p)[0],
        "recreate: digest sha256:cccccccccccc… → sha256:dddddddddddd…"
    );
}

#[test]
fn a_row_moving_from_its_pin_to_an_explicit_tag_is_an_image_change() {
    // The pin's container is made from `repo@digest`; the row then names
    // `repo:v3`, whose digest nobody has resolved yet.
    let s = Settings::test();
    let mut cat = Catalogue::seeded();
    cat.set_pin("langgraph", "stable", digest('a'));
    let r = row(1);
    let pinned = spec(&r, &cat, &s).expect("spec");
    let mut c = container_for(&pinned, "c1");
    c.image = pinned.image.to_string();
    let cs = [c];
    let mut tagged = r.clone();
    tagged.image = Some("registry.test/ws/workspace-template-langgraph:v3".into());
    let mut f = facts_for(&s, &tagged, &cs, &[]);
    f.spec = Some(spec(&tagged, &cat, &s));
    let p = plan_at(&f, t0());
    assert!(
        whys(&p)
            .first()
            .is_some_and(|w| w.starts_with("recreate: image")),
        "{:?}",
        whys(&p)
    );
}

#[test]
fn another_hash_version_is_compared_field_by_field() {
    let s = Settings::test();
    let r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.labels
        .insert(LABEL_SPEC_HASH.into(), "v0:whatever".into());
    let cs = [c.clone()];
    assert!(
        plan_at(&facts_for(&s, &r, &cs, &[]), t0())
            .actions
            .is_empty()
    );
    if let Some(m) = c.material.as_mut() {
        m.memory = 1;
    }
    let cs = [c];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(whys(&p)[0], "recreate: memory changed");
}

#[test]
fn a_session_epoch_bump_discards_the_session_volume_during_the_replace() {
    let s = Settings::test();
    let mut r = row(1).with_runtime("claude-code");
    let cs = [container_for(&built(&r, &s), "c1")];
    let mut sessions = volume(wid(1), &wid(1).sessions_volume(), "default");
    sessions
        .labels
        .insert(LABEL_SESSION_EPOCH.into(), "0".into());
    let vs = [sessions];
    assert!(
        plan_at(&facts_for(&s, &r, &cs, &vs), t0())
            .actions
            .is_empty()
    );
    r.session_epoch = 1;
    let p = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert_eq!(whys(&p)[0], "recreate: session_epoch 0 → 1");
    let i = ops(&p)
        .iter()
        .position(|o| *o == "remove_volume")
        .expect("volume discarded");
    assert_eq!(
        p.actions[i].op,
        Op::RemoveVolume {
            name: wid(1).sessions_volume(),
            below_epoch: Some(1),
        }
    );
    assert!(
        ops(&p)[..i].contains(&"remove_container"),
        "the old container releases it first"
    );
}

#[test]
fn a_session_epoch_bump_with_a_material_change_replaces_with_its_way_back_first() {
    let s = Settings::test();
    let old = row(1).with_runtime("claude-code");
    let cs = [container_for(&built(&old, &s), "c1")];
    let mut sessions = volume(wid(1), &wid(1).sessions_volume(), "default");
    sessions
        .labels
        .insert(LABEL_SESSION_EPOCH.into(), "0".into());
    let vs = [sessions];
    let mut r = old.clone().with_env(json!({"A": "2"}));
    r.session_epoch = 1;
    let p = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert!(
        !ops(&p).contains(&"remove_volume"),
        "the sessions wait: {:?}",
        ops(&p)
    );
    let restore = p.restore.expect("a way back");
    assert_eq!(restore.previous.as_deref(), Some("c1"), "the old one kept");
    // Once the new container serves the new spec, the sessions go in a
    // replace of their own.
    let cs = [container_for(&built(&r, &s), "c2")];
    let p = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert_eq!(whys(&p)[0], "recreate: session_epoch 0 → 1");
    assert!(ops(&p).contains(&"remove_volume"));
}

#[test]
fn a_session_volume_without_an_epoch_label_counts_as_epoch_zero() {
    let s = Settings::test();
    let mut r = row(1).with_runtime("claude-code");
    let cs = [container_for(&built(&r, &s), "c1")];
    // As the Go provisioner left it: no epoch label.
    let mut sessions = volume(wid(1), &wid(1).sessions_volume(), "default");
    sessions.labels.remove(LABEL_SESSION_EPOCH);
    let vs = [sessions];
    let kept = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert!(
        kept.actions.is_empty(),
        "kept at cut-over: {:?}",
        whys(&kept)
    );
    r.session_epoch = 1;
    let p = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert_eq!(whys(&p)[0], "recreate: session_epoch 0 → 1");
    assert!(ops(&p).contains(&"remove_volume"));
}

/// A pull of the spec `hash` that found no manifest, retried a minute
/// after t0.
fn pull_failed(hash: String) -> Failure {
    Failure {
        reason: Reason::ImageNotFound,
        phase: Phase::Pull,
        message: "manifest unknown".into(),
        retry_at: t0() + mins(1),
        hash,
    }
}

#[test]
fn a_failed_pull_leaves_the_old_container_serving_as_change_blocked() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"A": "2"}));
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let mut f = facts_for(&s, &r, &cs, &[]);
    let hash = built(&r, &s).hash;
    f.memory.failure = Some(pull_failed(hash));
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty());
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
    assert!(detail(&p).contains("manifest unknown"));
    // Its words count down to the retry: not a cause of its own each pass.
    assert!(!p.status.as_ref().unwrap().steady);
    assert!(
        !plan_at(&f, t0() + mins(2)).actions.is_empty(),
        "retried after the backoff"
    );
}

#[test]
fn a_legacy_container_is_adopted_and_replaced_onto_berths_spec() {
    let s = Settings::test();
    let r = row(1);
    let cs = [legacy_container(wid(1), "legacy")];
    let mut legacy_volume = volume(wid(1), &wid(1).configs_volume(), "default");
    legacy_volume.labels.retain(|k, _| k == LABEL_MANAGED);
    let vs = [legacy_volume];
    let p = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert_eq!(p.actions[0].why, Why::Replace(Change::Legacy));
    assert_eq!(
        whys(&p)[0],
        "recreate: legacy container moves onto berth's spec"
    );
    assert!(ops(&p).contains(&"rename"));
    assert!(
        !ops(&p).contains(&"remove_volume"),
        "its volumes are adopted with their data"
    );
}

#[test]
fn the_go_provisioners_unlabelled_workspace_volume_is_adopted_not_a_conflict() {
    let s = Settings::test();
    let r = row(1);
    let implicit = crate::model::ObservedVolume {
        name: wid(1).workspace_volume(),
        labels: Default::default(),
    };
    let cs = [legacy_container(wid(1), "legacy")];
    let vs = [implicit];
    let p = plan_at(&facts_for(&s, &r, &cs, &vs), t0());
    assert_eq!(p.actions[0].why, Why::Replace(Change::Legacy));
    let gone = r.clone().with_state(crate::model::DesiredState::Removed);
    let mut f = facts_for(&s, &gone, &cs, &vs);
    f.memory = plan_at(&f, t0()).memory;
    let removed = plan_at(&f, t0() + crate::plan::rules::REMOVED_HOLD);
    assert_eq!(ops(&removed), ["remove_container", "remove_volume"]);
    let mut stranger = vs[0].clone();
    stranger.name = wid(1).configs_volume();
    let vs = [stranger];
    let p = plan_at(&facts_for(&s, &r, &[], &vs), t0());
    assert_eq!(
        reason(&p),
        Some(Reason::NameConflict),
        "an unlabelled configs volume is a stranger's"
    );
}

#[test]
fn a_replace_tried_again_after_a_restart_gets_a_whole_provision_timeout() {
    // The old container serves: a berth restarted while the replace was
    // under way (the row shows it provisioning since t0-9m) tries again
    // with the whole timeout, not the minute left of the last attempt.
    let s = Settings::test();
    let mut cat = Catalogue::seeded();
    cat.set_pin("langgraph", "stable", digest('a'));
    let mut r = row(1);
    let old = spec(&r, &cat, &s).expect("spec");
    cat.set_pin("langgraph", "stable", digest('b'));
    r.observed_generation = r.generation;
    r.desired_changed_at = t0() - TimeDelta::minutes(30);
    r.status = Some(Status::Provisioning);
    r.status_changed_at = Some(t0() - TimeDelta::minutes(9));
    let cs = [container_for(&old, "old-container-id")];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.spec = Some(spec(&r, &cat, &s));
    let p = plan_at(&f, t0());
    let deadline = p.actions.iter().find_map(|a| match a.op {
        Op::WaitReady { deadline, .. } => Some(deadline),
        _ => None,
    });
    assert_eq!(deadline, Some(t0() + TimeDelta::minutes(10)));
}

#[test]
fn a_change_blocked_past_the_timeout_gets_a_whole_timeout_once_it_can_be_made() {
    // The pull failed half an hour ago and has been retried with backoff
    // since, the old container serving: once the image is there, the
    // replace is a fresh attempt, not one whose deadline passed long ago
    // (which would undo it the moment it started).
    let s = Settings::test();
    let mut r = row(1).with_env(json!({"A": "2"}));
    r.observed_generation = r.generation;
    r.desired_changed_at = t0() - TimeDelta::minutes(30);
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory.provisioning_since = Some(t0() - TimeDelta::minutes(30));
    f.memory.failure = Some(pull_failed(built(&r, &s).hash));
    let blocked = plan_at(&f, t0());
    assert_eq!(reason(&blocked), Some(Reason::ChangeBlocked));
    f.memory = blocked.memory.clone();
    let p = plan_at(&f, t0() + mins(2));
    let deadline = p.actions.iter().find_map(|a| match a.op {
        Op::WaitReady { deadline, .. } => Some(deadline),
        _ => None,
    });
    assert_eq!(deadline, Some(t0() + mins(2) + TimeDelta::minutes(10)));
}

#[test]
fn a_blocked_changes_old_container_found_stopped_is_started_again() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"A": "2"}));
    let mut old = container_for(&built(&row(1), &s), "c1");
    old.state = crate::model::ContainerState::Exited;
    old.exit_code = Some(137);
    let cs = [old];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory.failure = Some(pull_failed(built(&r, &s).hash));
    let p = plan_at(&f, t0());
    assert_eq!(ops(&p), ["start"], "{:?}", p.actions);
    // Running again, it serves while the change stays blocked.
    let mut up = cs[0].clone();
    up.state = crate::model::ContainerState::Running;
    let f = Facts {
        memory: p.memory.clone(),
        ..facts_for(&s, &r, std::slice::from_ref(&up), &[])
    };
    let p = plan_at(&f, t0() + TimeDelta::seconds(5));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
}

#[test]
fn a_stranger_under_the_prev_name_blocks_changes_while_the_container_serves() {
    let s = Settings::test();
    let mut stranger = container_for(&built(&row(1), &s), "stranger");
    stranger.name = wid(1).prev_container_name();
    stranger.labels.clear();
    let serving = container_for(&built(&row(1), &s), "c1");
    let cs = [serving.clone(), stranger.clone()];
    // Nothing wanted: online, saying what holds changes back.
    let p = plan_at(&facts_for(&s, &row(1), &cs, &[]), t0());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let st = p.status.clone().unwrap();
    assert_eq!((st.status, st.reason), (Status::Online, None));
    assert!(
        detail(&p).contains("its container serves on"),
        "{}",
        detail(&p)
    );
    // A change wanted: blocked, not failed; nothing touched.
    let edited = row(1).with_env(json!({"A": "2"}));
    let p = plan_at(&facts_for(&s, &edited, &cs, &[]), t0());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
    // Its own container down: started again in place (no name needed),
    // the change still held back.
    let mut down = serving;
    down.state = crate::model::ContainerState::Exited;
    let p = plan_at(
        &facts_for(&s, &edited, &[down, stranger.clone()], &[]),
        t0(),
    );
    assert_eq!(ops(&p), ["start"], "{:?}", p.actions);
    // No container of its own: the conflict is the row's state.
    let p = plan_at(&facts_for(&s, &edited, &[stranger], &[]), t0());
    assert_eq!(reason(&p), Some(Reason::NameConflict));
}
