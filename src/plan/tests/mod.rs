//! Tests of the planner, with the fixtures they share.

mod bad_rows;
mod hash_golden;
mod host_model;
mod local_build;
mod pass;
mod props;
mod rules_health;
mod rules_interrupted;
mod rules_ready;
mod rules_removal;
mod rules_replace;
mod rules_running;
mod rules_undone;
mod spec_invalid;
mod spec_parity;
mod world;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

use crate::model::{
    ContainerSpec, ContainerState, Health, LABEL_HOST, LABEL_MANAGED, LABEL_WORKSPACE,
    ObservedContainer, ObservedVolume, Reason, WorkspaceId, WorkspaceRow,
};

use super::{Catalogue, Facts, Failure, Op, Phase, Plan, Settings, Why, plan, spec};

/// A fixed instant: every test clock starts here.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

pub fn mins(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

/// Workspace `n`: its id12 differs from every other `n`'s.
pub fn wid(n: u32) -> WorkspaceId {
    WorkspaceId(Uuid::from_u128(
        (u128::from(n) << 96) | 0x4000_8000_0000_0000_abcd,
    ))
}

pub fn row(n: u32) -> WorkspaceRow {
    WorkspaceRow::test(wid(n), t0())
}

pub fn built(row: &WorkspaceRow, settings: &Settings) -> ContainerSpec {
    spec(row, &Catalogue::seeded(), settings).expect("a valid row")
}

/// The container `spec` describes, running, healthy, started at t0.
pub fn container_for(spec: &ContainerSpec, docker_id: &str) -> ObservedContainer {
    ObservedContainer {
        id: docker_id.into(),
        name: spec.name.clone(),
        labels: spec.labels.clone(),
        state: ContainerState::Running,
        health: Health::Healthy,
        image: spec.image.to_string(),
        image_id: "sha256:image".into(),
        created: t0(),
        started_at: Some(t0()),
        finished_at: None,
        restart_count: 0,
        exit_code: None,
        oom_killed: false,
        networks: None,
        material: Some(spec.material.clone()),
    }
}

/// A container the Go provisioner made: its name and the managed label.
pub fn legacy_container(id: WorkspaceId, docker_id: &str) -> ObservedContainer {
    ObservedContainer {
        labels: BTreeMap::from([(LABEL_MANAGED.into(), "true".into())]),
        name: id.container_name(),
        material: None,
        image: "ghcr.io/molecule-ai/workspace-template-langgraph:latest".into(),
        ..container_for(&built(&row(0), &Settings::test()), docker_id)
    }
}

pub fn volume(id: WorkspaceId, name: &str, host: &str) -> ObservedVolume {
    ObservedVolume {
        name: name.into(),
        labels: BTreeMap::from([
            (LABEL_MANAGED.into(), "true".into()),
            (LABEL_WORKSPACE.into(), id.to_string()),
            (LABEL_HOST.into(), host.into()),
        ]),
    }
}

/// Facts for `row` with its spec built and the given observed objects.
pub fn facts_for<'a>(
    settings: &'a Settings,
    row: &'a WorkspaceRow,
    containers: &'a [ObservedContainer],
    volumes: &'a [ObservedVolume],
) -> Facts<'a> {
    let mut f = Facts::empty(settings, row.id);
    f.row = Some(row);
    f.spec = Some(spec(row, &Catalogue::seeded(), settings));
    f.containers = containers.iter().collect();
    f.volumes = volumes.iter().collect();
    f
}

/// The op names of a plan, in order.
pub fn ops(p: &Plan) -> Vec<&'static str> {
    p.actions.iter().map(|a| a.op.name()).collect()
}

/// The reasons of a plan, as their audit lines.
pub fn whys(p: &Plan) -> Vec<String> {
    p.actions.iter().map(|a| a.why.to_string()).collect()
}

/// The reason the plan's status gives, if any.
pub fn reason(p: &Plan) -> Option<crate::model::Reason> {
    p.status.as_ref().and_then(|s| s.reason)
}

/// The detail (`last_error`) the plan's status gives, or "".
pub fn detail(p: &Plan) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.detail.clone())
        .unwrap_or_default()
}

pub fn plan_at(f: &Facts, now: DateTime<Utc>) -> Plan {
    plan(f, now)
}

/// A failure of the spec `hash` in `phase`, retried a minute after t0.
pub fn failure(reason: Reason, phase: Phase, message: &str, hash: &str) -> Failure {
    Failure {
        reason,
        phase,
        message: message.into(),
        retry_at: t0() + mins(1),
        hash: hash.into(),
    }
}
