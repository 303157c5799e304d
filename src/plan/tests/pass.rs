//! The pass: keys from both sides, the name and T4 guards, legacy
//! attribution, the delete guard.

use crate::model::{DeleteGuard, Reason};
use crate::plan::{Memory, PassPlan, Snapshot, plan_pass};

use super::*;

fn snapshot(rows: Vec<WorkspaceRow>, containers: Vec<ObservedContainer>) -> Snapshot {
    Snapshot {
        rows,
        catalogue: Catalogue::seeded(),
        containers,
        desired_complete: true,
        observed_complete: true,
        ..Snapshot::default()
    }
}

/// `rows` beside containers of workspaces 1..=`n` that have no row, each
/// seen once as an orphan at t0 (ripe ten minutes later).
fn with_orphans(rows: Vec<WorkspaceRow>, n: u32, s: &Settings) -> Snapshot {
    let seen = Memory {
        orphan_since: Some(t0()),
        orphan_sightings: 1,
        ..Memory::default()
    };
    let containers = (1..=n)
        .map(|i| container_for(&built(&row(i), s), &format!("c{i}")))
        .collect();
    let mut snap = snapshot(rows, containers);
    snap.memory = (1..=n).map(|i| (wid(i), seen.clone())).collect();
    snap
}

fn plan_of(pass: &PassPlan, id: WorkspaceId) -> &Plan {
    pass.plans
        .iter()
        .find(|p| p.id == id)
        .expect("a plan for the key")
}

fn reason_of(pass: &PassPlan, id: WorkspaceId) -> Option<Reason> {
    plan_of(pass, id).status.as_ref().and_then(|s| s.reason)
}

#[test]
fn keys_are_the_union_of_rows_and_owned_containers() {
    let s = Settings::test();
    let orphan = container_for(&built(&row(2), &s), "c2");
    let pass = plan_pass(&snapshot(vec![row(1)], vec![orphan]), &s, t0());
    let ids: Vec<_> = pass.plans.iter().map(|p| p.id).collect();
    assert_eq!(ids, [wid(1), wid(2)]);
}

#[test]
fn rows_of_other_hosts_are_not_this_hosts() {
    let s = Settings::test();
    let mut other = row(1);
    other.host = "host-b".into();
    let pass = plan_pass(&snapshot(vec![other], vec![]), &s, t0());
    assert!(pass.plans.is_empty());
}

/// A row made a minute after `row(1)` whose id shares its first 12
/// characters, and so its container and volume names.
fn younger_twin() -> WorkspaceRow {
    let mut younger = WorkspaceRow::test(
        WorkspaceId(uuid::Uuid::from_u128(wid(1).0.as_u128() ^ 0xffff)),
        t0() + mins(1),
    );
    younger.created_at = t0() + mins(1);
    younger
}

#[test]
fn the_older_of_two_rows_with_colliding_names_keeps_the_name() {
    let s = Settings::test();
    let older = row(1);
    let younger = younger_twin();
    assert_eq!(younger.id.id12(), older.id.id12());
    let pass = plan_pass(&snapshot(vec![younger.clone(), older], vec![]), &s, t0());
    assert_eq!(reason_of(&pass, younger.id), Some(Reason::NameConflict));
    assert_eq!(reason_of(&pass, wid(1)), Some(Reason::Pulling));
}

#[test]
fn a_twin_row_made_later_but_backdated_does_not_take_the_names_from_the_running_one() {
    let s = Settings::test();
    let mut running = younger_twin();
    let container = container_for(&built(&running, &s), "c1");
    let mut backdated = row(1);
    backdated.created_at = t0() - mins(60 * 24 * 365);
    running.status = Some(crate::model::Status::Online);
    let pass = plan_pass(
        &snapshot(vec![backdated.clone(), running.clone()], vec![container]),
        &s,
        t0(),
    );
    assert_ne!(
        reason_of(&pass, running.id),
        Some(Reason::NameConflict),
        "the workspace under the names lost them"
    );
    assert!(plan_of(&pass, running.id).actions.is_empty());
    assert_eq!(reason_of(&pass, backdated.id), Some(Reason::NameConflict));
}

#[test]
fn a_legacy_container_whose_name_two_rows_share_is_neither_rows() {
    let s = Settings::test();
    let older = row(1);
    let younger = younger_twin();
    let legacy = legacy_container(older.id, "legacy");
    let pass = plan_pass(
        &snapshot(vec![younger.clone(), older.clone()], vec![legacy]),
        &s,
        t0(),
    );
    for id in [older.id, younger.id] {
        assert_eq!(reason_of(&pass, id), Some(Reason::NameConflict), "{id}");
        assert!(plan_of(&pass, id).actions.is_empty(), "{id} acts");
    }
    assert_eq!(pass.unattributed, ["ws-00000001-000"]);
}

#[test]
fn only_the_oldest_t4_row_holds_the_hosts_one_t4() {
    let s = Settings {
        allow_host_root_tier: true,
        ..Settings::test()
    };
    let first = row(1).with_tier(4);
    let mut second = row(2).with_tier(4);
    second.created_at = t0() + mins(1);
    let pass = plan_pass(&snapshot(vec![first, second], vec![]), &s, t0());
    assert_eq!(reason_of(&pass, wid(1)), Some(Reason::Pulling));
    assert_eq!(reason_of(&pass, wid(2)), Some(Reason::TierNotAllowed));
}

#[test]
fn a_legacy_container_belongs_to_the_one_row_its_name_matches() {
    let s = Settings::test();
    let pass = plan_pass(
        &snapshot(
            vec![row(1)],
            vec![
                legacy_container(wid(1), "l1"),
                legacy_container(wid(9), "l9"),
            ],
        ),
        &s,
        t0(),
    );
    assert_eq!(pass.plans.len(), 1);
    assert_eq!(
        plan_of(&pass, wid(1)).actions[0].why.to_string(),
        "recreate: legacy container moves onto berth's spec"
    );
    assert_eq!(pass.unattributed, [wid(9).container_name()]);
}

#[test]
fn a_foreign_container_holding_a_rows_name_is_that_rows_conflict() {
    let s = Settings::test();
    let mut foreign = container_for(&built(&row(1), &s), "f");
    foreign.labels.clear();
    let pass = plan_pass(&snapshot(vec![row(1)], vec![foreign]), &s, t0());
    assert_eq!(reason_of(&pass, wid(1)), Some(Reason::NameConflict));
    assert!(plan_of(&pass, wid(1)).actions.is_empty());
}

#[test]
fn removals_over_the_delete_guard_are_all_withheld_with_an_alarm() {
    let s = Settings {
        delete_guard: DeleteGuard::Count(3),
        ..Settings::test()
    };
    let mut snap = with_orphans(
        vec![row(9).with_state(crate::model::DesiredState::Removed)],
        4,
        &s,
    );
    snap.containers
        .push(container_for(&built(&row(9), &s), "c9"));
    let pass = plan_pass(&snap, &s, t0() + mins(10));
    assert_eq!(pass.guard_blocked, Some((4, 3)));
    assert!(pass.plans.iter().all(|p| p.guarded_removals() == 0));
    assert_eq!(
        ops(plan_of(&pass, wid(9))),
        ["remove_container"],
        "a removed row is not counted"
    );

    snap.containers.truncate(3);
    let pass = plan_pass(&snap, &s, t0() + mins(10));
    assert_eq!(pass.guard_blocked, None);
    assert_eq!(
        pass.plans.iter().map(Plan::guarded_removals).sum::<usize>(),
        3
    );
}

#[test]
fn a_directory_inside_another_workspaces_writable_one_is_refused() {
    let mut s = Settings::test();
    s.workspace_roots = vec!["/srv/ws".into()];
    let access = |n, dir: &str, a| {
        let mut r = row(n);
        r.workspace_dir = Some(dir.to_string());
        r.workspace_access = a;
        r
    };
    use crate::model::WorkspaceAccess::{ReadOnly, ReadWrite};
    let rows = vec![
        access(1, "/srv/ws/a", ReadWrite),
        access(2, "/srv/ws/a/x", ReadOnly),
        access(3, "/srv/ws/b", ReadOnly),
        access(4, "/srv/ws/b/y", ReadOnly),
        access(5, "/srv/ws/ab", ReadWrite),
        access(6, "/srv/ws/a", ReadWrite),
        // Tier 1 binds no host directory: it holds none and lies in none.
        {
            let mut r = access(7, "/srv/ws/a/t1", ReadWrite);
            r.tier = 1;
            r
        },
    ];
    let pass = plan_pass(&snapshot(rows, vec![]), &s, t0());
    assert_eq!(reason_of(&pass, wid(2)), Some(Reason::InvalidSpec));
    let detail = plan_of(&pass, wid(2))
        .status
        .clone()
        .unwrap()
        .detail
        .unwrap();
    assert!(
        detail.contains("/srv/ws/a") && detail.contains("read-write"),
        "{detail}"
    );
    for n in [1, 3, 4, 5, 6, 7] {
        assert_ne!(
            reason_of(&pass, wid(n)),
            Some(Reason::InvalidSpec),
            "workspace {n}: a read-only outer dir, a sibling with a common prefix, the same dir and tier 1 are fine"
        );
    }
    // Each kept row's create carries the older kept rows' directories, to
    // check again once symlinks are followed; the oldest carries none.
    let others = |n| {
        let spec = plan_of(&pass, wid(n))
            .actions
            .iter()
            .find_map(|a| match &a.op {
                crate::plan::Op::Create(spec) => Some(spec.clone()),
                _ => None,
            })
            .expect("a create");
        spec.other_dirs
            .iter()
            .map(|o| (o.dir.clone(), o.read_write, o.workspace))
            .collect::<Vec<_>>()
    };
    assert_eq!(others(1), []);
    assert_eq!(
        others(4),
        [
            ("/srv/ws/a".to_string(), true, wid(1)),
            ("/srv/ws/b".to_string(), false, wid(3))
        ]
    );
}

#[test]
fn a_younger_or_invalid_directory_never_takes_an_older_rows_directory() {
    let mut s = Settings::test();
    s.workspace_roots = vec!["/srv/ws".into()];
    use crate::model::WorkspaceAccess::{ReadOnly, ReadWrite};
    let access = |n, dir: &str, a, age_min| {
        let mut r = row(n);
        r.workspace_dir = Some(dir.to_string());
        r.workspace_access = a;
        r.created_at = t0() - mins(age_min);
        r
    };
    let rows = vec![
        access(1, "/srv/ws/good", ReadWrite, 60),
        access(2, "/srv/ws/b/inner", ReadOnly, 50),
        // Younger, holding an older row's directory read-write.
        access(3, "/srv/ws/b", ReadWrite, 10),
        // Invalid on their own: an empty dir (a prefix of every path), a
        // relative one, one outside the roots.
        access(4, "", ReadWrite, 5),
        access(5, "srv/ws/good/x", ReadOnly, 5),
        access(6, "/srv", ReadWrite, 5),
    ];
    let pass = plan_pass(&snapshot(rows, vec![]), &s, t0());
    for n in [1, 2] {
        assert_ne!(
            reason_of(&pass, wid(n)),
            Some(Reason::InvalidSpec),
            "the older workspace {n} lost its directory"
        );
    }
    let detail = |n| {
        plan_of(&pass, wid(n))
            .status
            .clone()
            .unwrap()
            .detail
            .unwrap_or_default()
    };
    assert!(
        detail(3).contains("holds /srv/ws/b/inner") && detail(3).contains("older workspace"),
        "{}",
        detail(3)
    );
    assert!(
        detail(4).contains("needs workspace_dir") || detail(4).contains("not absolute"),
        "{}",
        detail(4)
    );
    assert!(detail(5).contains("is not absolute"), "{}", detail(5));
    assert!(
        detail(6).contains("outside the allowed roots"),
        "{}",
        detail(6)
    );
}

#[test]
fn withheld_removals_before_a_replace_leave_its_restore_on_the_same_step() {
    use crate::plan::{Action, Op, Restore, Target, Why, apply_delete_guard};
    let dup = |n: &str| {
        Action::new(
            Op::RemoveContainer {
                target: Target::Id(n.into()),
            },
            Why::Duplicate {
                keep: "main".into(),
            },
        )
    };
    let stop = Action::new(
        Op::Stop {
            target: Target::Id("main".into()),
            timeout: std::time::Duration::from_secs(1),
        },
        Why::Stopped,
    );
    let mut p = Plan::new(wid(1), Memory::default());
    p.actions = vec![dup("d1"), dup("d2"), stop.clone()];
    p.restore = Some(Restore {
        from: 2,
        actions: Vec::new(),
        previous: Some("main".into()),
    });
    let mut plans = [p];
    let (blocked, held) = apply_delete_guard(&mut plans, 1, &Default::default());
    assert_eq!(blocked, Some((2, 1)));
    assert_eq!(held, [wid(1)].into());
    assert_eq!(plans[0].actions, vec![stop]);
    assert_eq!(plans[0].restore.as_ref().unwrap().from, 0, "still the stop");
}

#[test]
fn a_percentage_guard_counts_workspaces_with_containers_not_rows() {
    // max(5, 10%): six orphans are one too many, however many rows (here
    // sixty that never got a container) the table holds.
    let s = Settings {
        delete_guard: DeleteGuard::Default,
        ..Settings::test()
    };
    let snap = with_orphans((100..160).map(row).collect(), 6, &s);
    let pass = plan_pass(&snap, &s, t0() + mins(10));
    assert_eq!(pass.guard_blocked, Some((6, 5)));
    assert!(pass.plans.iter().all(|p| p.guarded_removals() == 0));
}

#[test]
fn a_tripped_guard_holds_until_none_of_its_removals_is_wanted() {
    // Seven rows deleted at once, limit five: the guard trips. Put back
    // two by two, the rest never drop to a count it lets through: it holds
    // until every row is back.
    let s = Settings {
        delete_guard: DeleteGuard::Count(5),
        ..Settings::test()
    };
    let mut snap = with_orphans(vec![], 7, &s);
    let later = t0() + mins(10);
    let pass = plan_pass(&snap, &s, later);
    assert_eq!(pass.guard_blocked, Some((7, 5)));
    assert_eq!(pass.guard_held, (1..=7).map(wid).collect());

    snap.guard_held = pass.guard_held;
    snap.rows = vec![row(1), row(2)];
    let pass = plan_pass(&snap, &s, later);
    assert_eq!(pass.guard_blocked, Some((5, 5)), "held, under the limit");
    assert!(pass.plans.iter().all(|p| p.guarded_removals() == 0));
    assert!(
        plan_of(&pass, wid(3))
            .notes
            .iter()
            .any(|n| n.contains("tripped earlier and 5 of the workspace(s) it held back")),
        "{:?}",
        plan_of(&pass, wid(3)).notes
    );

    // Incomplete knowledge plans no removal and releases nothing.
    snap.guard_held = pass.guard_held;
    snap.observed_complete = false;
    let pass = plan_pass(&snap, &s, later);
    assert_eq!(pass.guard_held.len(), 5);
    snap.observed_complete = true;

    snap.rows = (1..=7).map(row).collect();
    let pass = plan_pass(&snap, &s, later);
    assert_eq!(pass.guard_blocked, None);
    assert!(pass.guard_held.is_empty(), "released");

    // A berth started next sees its orphans wait out their grace again:
    // the latch it took from the trail stays meanwhile.
    let mut fresh = with_orphans(vec![], 5, &s);
    fresh.guard_held = (1..=5).map(wid).collect();
    fresh.guard_held_limit = Some(5);
    let waiting = plan_pass(&fresh, &s, t0());
    assert_eq!(waiting.guard_blocked, None, "nothing to withhold yet");
    assert_eq!(waiting.guard_held.len(), 5);
    assert_eq!(waiting.guard_held_limit, Some(5));

    // A berth started with a raised limit takes the latch from the trail
    // and lets it go: the operator's word that the rows went on purpose.
    let mut raised = with_orphans(vec![], 5, &s);
    raised.guard_held = (1..=5).map(wid).collect();
    raised.guard_held_limit = Some(5);
    let same = plan_pass(&raised, &s, later);
    assert_eq!(same.guard_blocked, Some((5, 5)), "the same limit holds");
    let more = Settings {
        delete_guard: DeleteGuard::Count(10),
        ..Settings::test()
    };
    let pass = plan_pass(&raised, &more, later);
    assert_eq!(pass.guard_blocked, None);
    assert!(pass.guard_held.is_empty());
    assert_eq!(
        pass.plans.iter().map(Plan::guarded_removals).sum::<usize>(),
        5
    );

    // Once released, a single orphan goes as usual.
    snap.guard_held = pass.guard_held;
    snap.rows.pop();
    let pass = plan_pass(&snap, &s, later);
    assert_eq!(pass.guard_blocked, None);
    assert_eq!(plan_of(&pass, wid(7)).guarded_removals(), 1);
}

#[test]
fn a_pass_uses_the_runtimes_provision_timeout() {
    let s = Settings::test();
    let mut snap = snapshot(vec![row(1)], vec![]);
    let mut rt = crate::model::RuntimeRow::new("langgraph");
    rt.provision_timeout = Some(std::time::Duration::from_secs(60));
    snap.catalogue = Catalogue::new([rt], []);
    snap.memory.insert(
        wid(1),
        Memory {
            provisioning_since: Some(t0()),
            ..Memory::default()
        },
    );
    let pass = plan_pass(&snap, &s, t0() + mins(2));
    assert_eq!(reason_of(&pass, wid(1)), Some(Reason::ProvisionTimeout));
}

#[test]
fn planning_one_key_equals_that_keys_plan_in_the_pass() {
    let s = Settings::test();
    let stale = container_for(&built(&row(2), &s), "c2");
    let snap = snapshot(
        vec![row(1), row(2).with_env(serde_json::json!({"A": "1"}))],
        vec![stale],
    );
    let pass = plan_pass(&snap, &s, t0());
    for id in [wid(1), wid(2)] {
        assert_eq!(
            &crate::plan::plan_key(&snap, &s, id, t0()),
            plan_of(&pass, id)
        );
    }
}

#[test]
fn a_pass_labels_the_spec_with_the_image_digest_and_id_it_knows() {
    let s = Settings::test();
    let mut snap = snapshot(vec![row(1)], vec![]);
    let image = "registry.test/ws/workspace-template-langgraph:latest".to_string();
    let digest =
        crate::model::Digest::parse(&format!("sha256:{}", "e".repeat(64))).expect("digest");
    snap.images.insert(
        image,
        crate::model::ResolvedImage {
            digest: Some(digest.clone()),
            id: Some("sha256:id".into()),
        },
    );
    let pass = plan_pass(&snap, &s, t0());
    let created = plan_of(&pass, wid(1))
        .actions
        .iter()
        .find_map(|a| match &a.op {
            crate::plan::Op::Create(spec) => Some(spec.labels.clone()),
            _ => None,
        });
    let labels = created.expect("a create");
    assert_eq!(
        labels.get(crate::model::LABEL_IMAGE_DIGEST),
        Some(&digest.to_string())
    );
    assert_eq!(
        labels.get(crate::model::LABEL_IMAGE_ID).map(String::as_str),
        Some("sha256:id")
    );
}

#[test]
fn an_unlabelled_workspace_volume_belongs_to_the_workspace_its_full_id_names() {
    let s = Settings::test();
    let mut snap = snapshot(
        vec![row(1).with_state(crate::model::DesiredState::Removed)],
        vec![],
    );
    snap.volumes.push(crate::model::ObservedVolume {
        name: wid(1).workspace_volume(),
        labels: Default::default(),
    });
    let first = plan_pass(&snap, &s, t0());
    assert!(ops(plan_of(&first, wid(1))).is_empty(), "held at first");
    snap.memory = first
        .plans
        .iter()
        .map(|p| (p.id, p.memory.clone()))
        .collect();
    let pass = plan_pass(&snap, &s, t0() + crate::plan::rules::REMOVED_HOLD);
    assert_eq!(ops(plan_of(&pass, wid(1))), ["remove_volume"]);
    assert!(pass.unattributed.is_empty());
}
