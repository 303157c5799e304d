//! The plan as the operator reads it, from prepared snapshots.

use std::collections::BTreeMap;

use chrono::{TimeDelta, Utc};
use serde_json::json;

use super::*;
use crate::model::{
    ContainerState, Health, LABEL_HOST, LABEL_MANAGED, LABEL_WORKSPACE, ObservedContainer, Reason,
    Status,
};
use crate::plan::Catalogue;

fn id(n: u8) -> WorkspaceId {
    WorkspaceId(uuid::Uuid::from_bytes([n; 16]))
}

fn owned(id: WorkspaceId, host: &str, age: TimeDelta) -> ObservedContainer {
    let created = Utc::now() - age;
    ObservedContainer {
        id: format!("{:064x}", u128::from(id.0.as_bytes()[0])),
        name: id.container_name(),
        labels: BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_WORKSPACE.to_string(), id.to_string()),
            (LABEL_HOST.to_string(), host.to_string()),
        ]),
        state: ContainerState::Running,
        health: Health::None,
        image: "registry.test/ws/workspace-template-langgraph:latest".into(),
        image_id: "sha256:1111".into(),
        created,
        started_at: Some(created),
        finished_at: None,
        restart_count: 0,
        exit_code: None,
        oom_killed: false,
        networks: None,
        material: None,
    }
}

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

fn run(mut s: Snapshot, settings: &Settings) -> HostPlan {
    s.memory = orphan_memory(&s, settings);
    let pass = plan::plan_pass(&s, settings, Utc::now());
    describe(&s, settings, pass)
}

#[test]
fn a_missing_container_an_old_orphan_and_an_invalid_row_are_listed_with_their_reasons() {
    let settings = Settings::test();
    let now = Utc::now();
    let missing = WorkspaceRow::test(id(1), now);
    let invalid = WorkspaceRow::test(id(2), now).with_env(json!({"BAD=KEY": "canary-value"}));
    let orphan = owned(id(3), "default", TimeDelta::hours(2));
    let plan = run(snapshot(vec![missing, invalid], vec![orphan]), &settings);

    let by_id: BTreeMap<&str, &WorkspacePlan> =
        plan.workspaces.iter().map(|w| (w.id.as_str(), w)).collect();
    assert_eq!(by_id.len(), 3, "{plan:#?}");

    let created = by_id[id(1).to_string().as_str()];
    assert!(created.actions.iter().any(|a| a.op == "create"));
    assert!(
        created
            .actions
            .iter()
            .all(|a| a.reason == "create: no container")
    );

    let bad = by_id[id(2).to_string().as_str()];
    assert!(bad.actions.is_empty());
    let status = bad.status.as_ref().unwrap();
    assert_eq!(status.to, "failed/invalid_spec");
    assert!(status.detail.as_deref().unwrap().contains("BAD=KEY"));

    let gone = by_id[id(3).to_string().as_str()];
    assert_eq!(gone.name, None);
    assert_eq!(gone.actions.len(), 1);
    assert_eq!(gone.actions[0].op, "remove_container");
    assert_eq!(gone.actions[0].reason, "remove orphan: no row for 2h");

    assert_eq!(plan.pending(), 3);
    let text = plan.render();
    assert!(text.contains("remove orphan: no row for 2h"), "{text}");
    assert!(
        text.contains("3 workspace(s) with pending changes"),
        "{text}"
    );
    let json = serde_json::to_string(&plan).unwrap();
    for shown in [&text, &json] {
        assert!(!shown.contains("canary-value"), "a secret in the plan");
    }
}

#[test]
fn a_young_orphan_waits_for_the_grace_and_another_hosts_container_is_not_ours() {
    let settings = Settings::test();
    let young = owned(id(4), "default", TimeDelta::seconds(10));
    let foreign = owned(id(5), "elsewhere", TimeDelta::hours(5));
    let plan = run(snapshot(vec![], vec![young, foreign]), &settings);
    assert_eq!(plan.pending(), 0, "{plan:#?}");
    assert!(plan.workspaces.iter().all(|w| w.actions.is_empty()));
}

#[test]
fn a_row_that_already_shows_its_status_is_not_pending() {
    let settings = Settings::test();
    let mut bad = WorkspaceRow::test(id(6), Utc::now()).with_env(json!({"BAD=KEY": "x"}));
    let first = run(snapshot(vec![bad.clone()], vec![]), &settings);
    let detail = first.workspaces[0].status.as_ref().unwrap().detail.clone();
    bad.status = Some(Status::Failed);
    bad.status_reason = Some(Reason::InvalidSpec);
    bad.last_error = detail;
    bad.observed_generation = bad.generation;
    let again = run(snapshot(vec![bad.clone()], vec![]), &settings);
    assert_eq!(again.pending(), 0, "{again:#?}");
    assert!(again.render().contains("nothing to do"));

    // The same status for a newer generation is written again, not
    // changed, and says so.
    bad.generation += 1;
    let newer = run(snapshot(vec![bad], vec![]), &settings);
    let out = newer.render();
    assert!(out.contains("  status stays failed/invalid_spec"), "{out}");
}

#[test]
fn a_paused_row_showing_paused_is_not_pending_though_its_change_is_unobserved() {
    let settings = Settings::test();
    let mut paused = WorkspaceRow::test(id(7), Utc::now());
    paused.paused = true;
    paused.status = Some(Status::Paused);
    paused.generation = paused.observed_generation + 1;
    let plan = run(snapshot(vec![paused], vec![]), &settings);
    assert_eq!(plan.pending(), 0, "{plan:#?}");
}

/// The plan of a host without rows, as `plan` completes it.
fn without_rows(containers: Vec<ObservedContainer>, settings: &Settings) -> HostPlan {
    HostPlan {
        no_rows: Some(crate::desired::no_rows_notice(
            &settings.host_id,
            &[("other".to_string(), 2)],
        )),
        ..run(snapshot(vec![], containers), settings)
    }
}

#[test]
fn a_host_without_rows_is_not_said_to_be_in_line_and_its_own_containers_are_counted() {
    let settings = Settings::test();
    let host = settings.host_id.clone();
    let text = |plan: &HostPlan| plan.render();

    // Only another host's container: nothing of this host's.
    let foreign = without_rows(
        vec![owned(id(7), "elsewhere", TimeDelta::hours(5))],
        &settings,
    );
    assert_eq!(foreign.host_containers, 0);
    let t = text(&foreign);
    assert!(t.contains("hosts with rows: \"other\" (2)"), "{t}");
    assert!(
        t.contains(&format!(
            "no container on this engine is berth's for host {host:?} either"
        )),
        "{t}"
    );

    // A young orphan of this host: counted, nothing to do yet.
    let young = without_rows(vec![owned(id(8), &host, TimeDelta::seconds(10))], &settings);
    assert_eq!(young.host_containers, 1);
    let t = text(&young);
    assert!(
        t.contains(&format!(
            "1 container(s) on this engine are berth's for host {host:?}"
        )),
        "{t}"
    );
    assert!(t.contains("nothing to do now"), "{t}");
    assert!(
        t.contains("its container goes once seen without one for"),
        "the plan says when the orphan goes: {t}"
    );

    // An old one: its removal is listed, and no "nothing to do".
    let old = without_rows(vec![owned(id(9), &host, TimeDelta::hours(3))], &settings);
    let t = text(&old);
    assert!(t.contains("remove orphan: no row for 3h"), "{t}");
    assert!(!t.contains("nothing to do"), "{t}");

    for plan in [&foreign, &young, &old] {
        let t = text(plan);
        assert!(!t.contains("every workspace is in line"), "{t}");
    }
}

#[test]
fn image_replaces_are_summed_up_by_rollout_with_the_waves_berth_run_keeps() {
    let settings = Settings::test();
    let now = Utc::now();
    let digest = |c: char| {
        crate::model::Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    };
    let mut catalogue = Catalogue::seeded();
    catalogue.set_pin("langgraph", "stable", digest('a'));
    let rows: Vec<WorkspaceRow> = (1..=3).map(|n| WorkspaceRow::test(id(n), now)).collect();
    // Each runs the spec of the old pin.
    let containers = rows
        .iter()
        .map(|row| {
            let spec = crate::plan::spec(row, &catalogue, &settings).unwrap();
            ObservedContainer {
                labels: spec.labels.clone(),
                image: spec.image.to_string(),
                material: Some(spec.material.clone()),
                ..owned(row.id, "default", TimeDelta::hours(1))
            }
        })
        .collect();
    catalogue.set_pin("langgraph", "stable", digest('b'));
    let s = Snapshot {
        catalogue,
        ..snapshot(rows, containers)
    };
    let mut plan = run(s, &settings);
    plan.waves = (1, 2);
    assert_eq!(plan.rollouts.len(), 1, "{:#?}", plan.rollouts);
    assert_eq!(plan.rollouts[0].workspaces, 3);
    assert_eq!(plan.rollouts[0].track, "stable");
    let text = plan.render();
    assert!(
        text.contains("in waves (1 canary first, then at most 2 at a time")
            && text.contains("langgraph (stable) → sha256:bbbbbbbbbbbb: 3 workspace(s)"),
        "{text}"
    );
}

/// A row berth refuses (an env key with `=`) that already shows what a
/// pass would write for it.
fn failed_as_shown(settings: &Settings) -> WorkspaceRow {
    let mut invalid =
        WorkspaceRow::test(id(1), Utc::now()).with_env(json!({"BAD=KEY": "canary-value"}));
    let first = plan::plan_pass(
        &snapshot(vec![invalid.clone()], vec![]),
        settings,
        Utc::now(),
    );
    let update = first.plans[0].status.clone().unwrap();
    invalid.status = Some(update.status);
    invalid.status_reason = update.reason;
    invalid.last_error = update.detail;
    invalid.observed_generation = invalid.generation;
    invalid
}

#[test]
fn a_row_that_stays_failed_is_not_said_to_be_in_line() {
    let settings = Settings::test();
    let invalid = failed_as_shown(&settings);
    let plan = run(snapshot(vec![invalid], vec![]), &settings);
    assert!(plan.workspaces.is_empty(), "{plan:#?}");
    assert_eq!(plan.stuck, 1);
    let t = plan.render();
    assert!(!t.contains("every workspace is in line"), "{t}");
    assert!(t.contains("1 workspace(s) are failed or degraded"), "{t}");
}

#[test]
fn a_failed_row_is_counted_beside_other_workspaces_listed() {
    let settings = Settings::test();
    let invalid = failed_as_shown(&settings);
    // A new row beside it: the plan lists its create.
    let new = WorkspaceRow::test(id(2), Utc::now());
    let plan = run(snapshot(vec![invalid, new], vec![]), &settings);
    assert_eq!(plan.workspaces.len(), 1, "{plan:#?}");
    let t = plan.render();
    assert!(
        t.contains("1 workspace(s) are failed or degraded with nothing to do now"),
        "{t}"
    );
}
