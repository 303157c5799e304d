//! Rules 6 and 7 for a running row: create, crash loop, backoff, restart
//! epoch, start failures (readiness and the clock: `rules_ready`).

use serde_json::json;

use super::*;
use crate::model::{ContainerState, Reason, Status};
use crate::plan::{Memory, Phase, StatusUpdate, Target};
#[test]
fn a_missing_container_is_provisioned_in_order() {
    let s = Settings::test();
    let r = row(1);
    let f = facts_for(&s, &r, &[], &[]);
    let p = plan_at(&f, t0());
    assert_eq!(
        ops(&p),
        [
            "ensure_image",
            "ensure_volume",
            "ensure_volume",
            "create",
            "write_files",
            "start",
            "wait_ready"
        ]
    );
    assert_eq!(whys(&p)[0], "create: no container");
    assert_eq!(reason(&p), Some(Reason::Pulling));
    // An image known local already: the pass makes the container.
    let mut known = facts_for(&s, &r, &[], &[]);
    known.image = crate::model::ResolvedImage {
        digest: None,
        id: Some("sha256:local".into()),
    };
    assert_eq!(reason(&plan_at(&known, t0())), Some(Reason::Creating));
    let restore = p.restore.expect("a failed create leaves nothing half-made");
    assert_eq!(restore.from, 3);
    assert_eq!(restore.actions[0].op.target(), Some(&Target::Created));
}

#[test]
fn volumes_gone_with_the_container_are_said_to_be_made_anew_empty() {
    let s = Settings::test();
    let mut r = row(1);
    let first = plan_at(&facts_for(&s, &r, &[], &[]), t0());
    assert!(first.notes.is_empty(), "a first create: {:?}", first.notes);

    r.container_id = Some("gone".into());
    let vs = [volume(wid(1), &wid(1).configs_volume(), "default")];
    let p = plan_at(&facts_for(&s, &r, &[], &vs), t0());
    assert_eq!(ops(&p)[0], "ensure_image");
    assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
    assert!(p.notes[0].contains("made anew, empty"), "{:?}", p.notes);
    assert!(p.notes[0].contains(&wid(1).workspace_volume()));
    assert!(!p.notes[0].contains(&wid(1).configs_volume()));

    // A container removed by hand, its volumes kept: nothing to say.
    let vs = [
        volume(wid(1), &wid(1).configs_volume(), "default"),
        volume(wid(1), &wid(1).workspace_volume(), "default"),
    ];
    let kept = plan_at(&facts_for(&s, &r, &[], &vs), t0());
    assert!(kept.notes.is_empty(), "{:?}", kept.notes);
}

#[test]
fn local_build_mode_reports_building() {
    let s = Settings {
        registry_prefix: None,
        ..Settings::test()
    };
    let r = row(1);
    assert_eq!(
        reason(&plan_at(&facts_for(&s, &r, &[], &[]), t0())),
        Some(Reason::Building)
    );
}

#[test]
fn no_config_yaml_from_any_source_is_config_missing() {
    let s = Settings::test();
    let r = row(1).with_config_files(json!({}));
    let p = plan_at(&facts_for(&s, &r, &[], &[]), t0());
    assert!(p.actions.is_empty());
    assert_eq!(reason(&p), Some(Reason::ConfigMissing));

    let vs = [volume(wid(1), &wid(1).configs_volume(), "default")];
    let f = facts_for(&s, &r, &[], &vs);
    assert!(
        !plan_at(&f, t0()).actions.is_empty(),
        "an existing volume may hold it: the executor looks after writing"
    );
}

#[test]
fn a_template_dir_that_is_not_there_creates_nothing_and_blocks_a_replace() {
    let s = Settings::test();
    let mut r = row(1).with_env(json!({"A": "1"}));
    r.template_path = Some("/srv/templates/gone".into());
    let mut f = facts_for(&s, &r, &[], &[]);
    f.probes.template_dir = Some(false);
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty(), "{:?}", ops(&p));
    assert_eq!(reason(&p), Some(Reason::InvalidSpec));
    assert!(detail(&p).contains("/srv/templates/gone"), "{}", detail(&p));

    // A running container on an older spec (no env) keeps serving.
    let old = container_for(&built(&row(1), &s), "old");
    let cs = [old];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.probes.template_dir = Some(false);
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty(), "{:?}", ops(&p));
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
    f.probes.template_dir = Some(true);
    assert_eq!(
        ops(&plan_at(&f, t0()))[0],
        "ensure_image",
        "the change goes once it is there"
    );
}

#[test]
fn a_create_waits_for_a_complete_container_list() {
    let s = Settings::test();
    let r = row(1);
    let mut f = facts_for(&s, &r, &[], &[]);
    f.observed_complete = false;
    assert!(plan_at(&f, t0()).actions.is_empty());
}

#[test]
fn restarts_within_ten_minutes_make_a_crash_loop_and_ten_minutes_up_clears_it() {
    let s = Settings::test();
    let r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.state = ContainerState::Restarting;
    c.exit_code = Some(137);
    c.oom_killed = true;
    let mut memory = Memory::default();
    for n in 0..=5u32 {
        c.restart_count = n;
        let cs = [c.clone()];
        let mut f = facts_for(&s, &r, &cs, &[]);
        f.memory = memory;
        let p = plan_at(&f, t0() + mins(i64::from(n)));
        memory = p.memory.clone();
        let want = if n == 5 {
            Reason::CrashLoop
        } else {
            Reason::Starting
        };
        assert_eq!(reason(&p), Some(want), "after {n} restarts");
        assert!(p.actions.is_empty(), "the restart policy restarts it");
    }
    // Up again between crashes, it shows exit code 0 and no OOM: the
    // status keeps the code it last went down with.
    c.state = ContainerState::Running;
    c.exit_code = Some(0);
    c.oom_killed = false;
    c.started_at = Some(t0() + mins(5));
    let cs = [c];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory = memory;
    let up = plan_at(&f, t0() + mins(6));
    assert_eq!(reason(&up), Some(Reason::CrashLoop));
    assert!(
        detail(&up).ends_with("last exit code 137, OOM killed"),
        "{}",
        detail(&up)
    );
    let p = plan_at(&f, t0() + mins(16));
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Online)));
}

#[test]
fn a_stopped_container_is_started_with_berths_backoff() {
    let s = Settings::test();
    let r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.state = ContainerState::Exited;
    c.exit_code = Some(1);
    let cs = [c];
    let mut f = facts_for(&s, &r, &cs, &[]);
    let p1 = plan_at(&f, t0());
    assert_eq!(
        whys(&p1),
        ["start: container is stopped (exit code 1), berth's attempt 1"]
    );
    f.memory = p1.memory;
    assert!(
        plan_at(&f, t0() + TimeDelta::seconds(5)).actions.is_empty(),
        "inside 10s"
    );
    let p2 = plan_at(&f, t0() + TimeDelta::seconds(11));
    assert_eq!(
        whys(&p2),
        ["start: container is stopped (exit code 1), berth's attempt 2"]
    );
    f.memory = p2.memory;
    assert!(
        plan_at(&f, t0() + TimeDelta::seconds(25))
            .actions
            .is_empty(),
        "now 20s"
    );
}

#[test]
fn a_restart_epoch_bump_restarts_once() {
    let s = Settings::test();
    let mut r = row(1);
    let cs = [container_for(&built(&r, &s), "c1")];
    r.restart_epoch = 1;
    r.desired_changed_at = t0() + mins(1);
    let mut f = facts_for(&s, &r, &cs, &[]);
    let p = plan_at(&f, t0() + mins(2));
    assert_eq!(ops(&p), ["write_files", "restart"], "the files first");
    assert_eq!(
        whys(&p),
        ["restart: restart_epoch 1 (the container was made at 0)"; 2]
    );
    f.memory = p.memory;
    assert!(plan_at(&f, t0() + mins(3)).actions.is_empty());

    // Nothing to write: only the restart.
    let mut bare = row(1);
    bare.config_files = crate::model::Secret::new(serde_json::json!({}));
    let cs = [container_for(&built(&bare, &s), "c1")];
    bare.restart_epoch = 1;
    bare.desired_changed_at = t0() + mins(1);
    let p = plan_at(&facts_for(&s, &bare, &cs, &[]), t0() + mins(2));
    assert_eq!(ops(&p), ["restart"]);
}

#[test]
fn a_restart_done_by_an_earlier_berth_is_not_done_again_after_another_edit() {
    // Bumped at t0+1m, restarted at t0+2m by a berth that is gone (no
    // memory); the ring changed at t0+5m.
    let s = Settings::test();
    let mut r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.started_at = Some(t0() + mins(2));
    r.restart_epoch = 1;
    r.restart_requested_at = Some(t0() + mins(1));
    r.desired_changed_at = t0() + mins(5);
    let cs = [c.clone()];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + mins(6));
    assert!(p.actions.is_empty(), "{:?}", whys(&p));

    // Bumped again: restarted again.
    r.restart_epoch = 2;
    r.restart_requested_at = Some(t0() + mins(7));
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + mins(8));
    assert_eq!(ops(&p), ["write_files", "restart"]);
}

#[test]
fn an_old_stopped_container_found_without_memory_is_started_on_a_fresh_clock() {
    // berth stopped it for a replace and was killed before the rename; the
    // row says provisioning, and the container is older than the timeout.
    let s = Settings::test();
    let mut r = row(1);
    r.status = Some(Status::Provisioning);
    r.status_reason = Some(Reason::Pulling);
    let mut c = container_for(&built(&r, &s), "c1");
    c.state = ContainerState::Exited;
    c.exit_code = Some(0);
    r.container_id = Some("c1".into());
    let cs = [c.clone()];
    let later = t0() + TimeDelta::days(3);
    let f = facts_for(&s, &r, &cs, &[]);
    let p = plan_at(&f, later);
    assert_eq!(ops(&p), ["start"], "{:?}", p.status);
    assert_eq!(reason(&p), Some(Reason::Starting));
    assert_eq!(p.memory.provisioning_since, Some(later));
    // The fresh attempt has its whole timeout, and no more.
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory = p.memory.clone();
    f.memory.next_start_at = None;
    let p = plan_at(&f, later + f.provision_timeout + mins(1));
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
    // One that never ran (created, never started) keeps the clock of its
    // creation.
    let mut created = c;
    created.state = ContainerState::Created;
    created.started_at = None;
    let cs = [created];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), later);
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
}

#[test]
fn a_restart_epoch_bump_of_a_stopped_container_writes_the_files_before_its_start() {
    let s = Settings::test();
    let mut r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.state = crate::model::ContainerState::Exited;
    c.exit_code = Some(0);
    let cs = [c];
    r.restart_epoch = 1;
    r.desired_changed_at = t0() + mins(1);
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + mins(2));
    assert_eq!(ops(&p), ["write_files", "start"]);
}

#[test]
fn a_dead_container_is_removed_to_be_created_again() {
    let s = Settings::test();
    let r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.state = ContainerState::Dead;
    let cs = [c];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(whys(&p), ["remove: container is dead"]);
}

#[test]
fn an_invalid_edit_of_a_serving_row_is_a_blocked_change_and_its_container_left_running() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"": "x"}));
    let cs = [container_for(&built(&row(1), &s), "c1")];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert!(p.actions.is_empty());
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
    let detail = p.status.as_ref().and_then(|s| s.detail.clone()).unwrap();
    assert!(
        detail.contains("env key is empty") || detail.contains("invalid_spec"),
        "{detail}"
    );
    assert!(detail.contains("serves on"), "{detail}");

    // A container that never ran served nothing: the row has failed.
    let mut made = cs[0].clone();
    made.state = ContainerState::Created;
    made.started_at = None;
    let p = plan_at(&facts_for(&s, &r, &[made], &[]), t0());
    assert!(p.actions.is_empty());
    assert_eq!(reason(&p), Some(Reason::InvalidSpec));
}

#[test]
fn the_last_specs_container_of_an_invalid_edit_is_started_when_down_and_restarted_for_its_epoch() {
    let s = Settings::test();
    let mut r = row(1).with_env(json!({"A=B": "x"}));
    r.desired_changed_at = t0() + mins(1);
    let serving = container_for(&built(&row(1), &s), "c1");

    // Stopped (a crash, a `docker stop`): started again, as any container
    // of the workspace is; the row still says why nothing else changes.
    let mut down = serving.clone();
    down.state = ContainerState::Exited;
    down.exit_code = Some(0);
    let p = plan_at(
        &facts_for(&s, &r, std::slice::from_ref(&down), &[]),
        t0() + mins(2),
    );
    assert_eq!(ops(&p), ["start"]);
    assert!(
        detail(&p).contains("change cannot be made"),
        "the row still says why: {:?}",
        p.status
    );

    // Stopped by its row before the edit: the edit that makes no spec
    // does not bring back what it edited away from.
    let mut was_stopped = r.clone();
    was_stopped.status = Some(Status::Stopped);
    let p = plan_at(&facts_for(&s, &was_stopped, &[down], &[]), t0() + mins(2));
    assert!(p.actions.is_empty(), "{:?}", whys(&p));
    assert_eq!(reason(&p), Some(Reason::InvalidSpec));

    // A restart asked for: the container is restarted, without the files
    // a spec it cannot make would write.
    r.restart_epoch = 1;
    r.restart_requested_at = Some(t0() + mins(1));
    let p = plan_at(&facts_for(&s, &r, &[serving], &[]), t0() + mins(2));
    assert_eq!(ops(&p), ["restart"]);
}

#[test]
fn a_start_the_daemon_refuses_stays_start_failed_with_its_words() {
    let s = Settings::test();
    let r = row(1).with_tier(3);
    let mut f = facts_for(&s, &r, &[], &[]);
    f.memory.provisioning_since = Some(t0());
    f.memory.failure = Some(failure(
        Reason::StartFailed,
        Phase::Start,
        "unable to apply caps: operation not permitted",
        &built(&r, &s).hash,
    ));
    let backing_off = plan_at(&f, t0());
    assert!(backing_off.actions.is_empty());
    assert_eq!(reason(&backing_off), Some(Reason::StartFailed));
    assert!(detail(&backing_off).contains("unable to apply caps"));
    assert!(
        !plan_at(&f, t0() + mins(2)).actions.is_empty(),
        "retried after the backoff"
    );
    let given_up = plan_at(&f, t0() + mins(11));
    assert!(given_up.actions.is_empty());
    assert_eq!(reason(&given_up), Some(Reason::StartFailed));
}

#[test]
fn a_created_container_whose_filling_failed_waits_for_the_retry_time() {
    let s = Settings::test();
    let r = row(1);
    let spec = built(&r, &s);
    let mut c = container_for(&spec, "c1");
    c.state = ContainerState::Created;
    c.started_at = None;
    let cs = [c];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory.provisioning_since = Some(t0());
    f.memory.failure = Some(failure(
        Reason::ConfigMissing,
        Phase::Create,
        "no config.yaml in /configs",
        &spec.hash,
    ));
    let waiting = plan_at(&f, t0());
    assert!(waiting.actions.is_empty(), "{:?}", ops(&waiting));
    assert_eq!(reason(&waiting), Some(Reason::ConfigMissing));
    assert_eq!(
        waiting.requeue_after,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(
        ops(&plan_at(&f, t0() + mins(2))),
        ["write_files", "start"],
        "filled and started after the backoff"
    );
}

#[test]
fn a_crash_loop_the_row_shows_stands_for_a_berth_that_just_started() {
    let s = Settings::test();
    let mut r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.state = ContainerState::Running;
    c.restart_count = 10;
    c.started_at = Some(t0() - mins(1));
    r.container_id = Some("c1".into());
    r.status = Some(Status::Degraded);
    r.status_reason = Some(Reason::CrashLoop);
    let cs = [c.clone()];
    // No memory: this berth has not seen one of the ten restarts.
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(reason(&p), Some(Reason::CrashLoop), "{:?}", p.status);
    // Up a whole window since its latest start: judged afresh.
    let later = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + mins(10));
    assert_ne!(
        reason(&later),
        Some(Reason::CrashLoop),
        "{:?}",
        later.status
    );
    // A row that says nothing of a loop seeds nothing.
    r.status = Some(Status::Online);
    r.status_reason = None;
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_ne!(reason(&p), Some(Reason::CrashLoop), "{:?}", p.status);
}

#[test]
fn a_change_held_for_its_wave_keeps_the_container_as_it_is_and_leaves_the_generation_unobserved() {
    let s = Settings::test();
    let r = row(1).with_env(json!({"EDITED": "1"}));
    let serving = container_for(&built(&row(1), &s), "c1");
    let why = "its change goes with the image, in its rollout wave".to_string();

    let mut f = facts_for(&s, &r, std::slice::from_ref(&serving), &[]);
    f.held_change = Some(why.clone());
    let p = plan_at(&f, t0() + mins(2));
    assert!(p.actions.is_empty(), "no replace: {:?}", whys(&p));
    let status = p.status.clone().unwrap();
    assert_eq!(status.status, Status::Online);
    assert_eq!(status.detail.as_deref(), Some(why.as_str()));
    assert!(status.unobserved, "the edit is not observed while it waits");

    // Stopped meanwhile: started again as it is, without the edit.
    let mut down = serving.clone();
    down.state = ContainerState::Exited;
    let mut f = facts_for(&s, &r, std::slice::from_ref(&down), &[]);
    f.held_change = Some(why.clone());
    let p = plan_at(&f, t0() + mins(2));
    assert_eq!(ops(&p), ["start"]);
    assert!(p.status.unwrap().unobserved);

    // Without the hold the same facts replace the container.
    let f = facts_for(&s, &r, std::slice::from_ref(&serving), &[]);
    assert!(ops(&plan_at(&f, t0() + mins(2))).contains(&"create"));
}
