//! Generated hosts for the properties: rows in every desired state beside
//! containers in every Docker state, named and labelled every way berth
//! may find them.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::host_model::Host;
use super::*;
use crate::model::{DesiredState, LABEL_HOST, LABEL_MANAGED, LABEL_SESSION_EPOCH};
use crate::plan::Snapshot;

#[derive(Clone, Debug)]
pub(super) struct RowGen {
    pub(super) state: DesiredState,
    pub(super) paused: bool,
    pub(super) tier: i32,
    pub(super) claude: bool,
    pub(super) env: u8,
    pub(super) restart_epoch: i64,
    pub(super) session_epoch: i64,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Current,
    Stale,
    Legacy,
    Foreign,
    OtherHost,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Name {
    Main,
    Prev,
    Odd,
}

#[derive(Clone, Debug)]
pub(super) struct ContainerGen {
    pub(super) kind: Kind,
    pub(super) name: Name,
    pub(super) state: ContainerState,
    pub(super) health: crate::model::Health,
    pub(super) age_min: i64,
}

#[derive(Clone, Debug)]
pub(super) struct WsGen {
    pub(super) row: Option<RowGen>,
    pub(super) containers: Vec<ContainerGen>,
    /// The configs volume, berth's (`Current`, `Stale`), the Go
    /// provisioner's (`Legacy`), unlabelled (`Foreign`) or another host's.
    pub(super) configs_volume: Option<Kind>,
    pub(super) sessions_epoch: Option<i64>,
    /// The Go provisioner's unlabelled /workspace volume.
    pub(super) implicit_workspace_volume: bool,
}

#[derive(Clone, Debug)]
pub(super) struct World {
    pub(super) workspaces: Vec<WsGen>,
    pub(super) desired_complete: bool,
    pub(super) observed_complete: bool,
}

pub(super) fn row_gen() -> impl Strategy<Value = RowGen> {
    (
        prop_oneof![
            6 => Just(DesiredState::Running),
            2 => Just(DesiredState::Stopped),
            2 => Just(DesiredState::Removed)
        ],
        prop::bool::weighted(0.1),
        0..4i32,
        any::<bool>(),
        0..3u8,
        0..2i64,
        0..2i64,
    )
        .prop_map(
            |(state, paused, tier, claude, env, restart_epoch, session_epoch)| RowGen {
                state,
                paused,
                tier,
                claude,
                env,
                restart_epoch,
                session_epoch,
            },
        )
}

pub(super) fn container_gen() -> impl Strategy<Value = ContainerGen> {
    use crate::model::Health;
    (
        prop_oneof![
            5 => Just(Kind::Current),
            3 => Just(Kind::Stale),
            1 => Just(Kind::Legacy),
            1 => Just(Kind::Foreign),
            1 => Just(Kind::OtherHost)
        ],
        prop_oneof![4 => Just(Name::Main), 2 => Just(Name::Prev), 1 => Just(Name::Odd)],
        prop_oneof![
            5 => Just(ContainerState::Running),
            2 => Just(ContainerState::Exited),
            1 => Just(ContainerState::Created),
            1 => Just(ContainerState::Restarting),
            1 => Just(ContainerState::Dead)
        ],
        prop_oneof![
            Just(Health::Healthy),
            Just(Health::None),
            Just(Health::Starting),
            Just(Health::Unhealthy)
        ],
        0..60i64,
    )
        .prop_map(|(kind, name, state, health, age_min)| ContainerGen {
            kind,
            name,
            state,
            health,
            age_min,
        })
}

pub(super) fn world(complete: bool) -> impl Strategy<Value = World> {
    let ws = (
        prop::option::weighted(0.8, row_gen()),
        prop::collection::vec(container_gen(), 0..4),
        prop::option::of(prop_oneof![
            6 => Just(Kind::Current),
            1 => Just(Kind::Legacy),
            1 => Just(Kind::Foreign),
            1 => Just(Kind::OtherHost)
        ]),
        prop::option::of(0..3i64),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(row, containers, configs_volume, sessions_epoch, implicit)| WsGen {
                row,
                containers,
                configs_volume,
                sessions_epoch,
                implicit_workspace_volume: implicit,
            },
        );
    let flags = if complete {
        Just((true, true)).boxed()
    } else {
        (any::<bool>(), any::<bool>()).boxed()
    };
    (prop::collection::vec(ws, 1..7), flags).prop_map(|(workspaces, (d, o))| World {
        workspaces,
        desired_complete: d,
        observed_complete: o,
    })
}

pub(super) fn make_row(n: u32, g: &RowGen) -> WorkspaceRow {
    let mut r = row(n)
        .with_state(g.state)
        .with_tier(g.tier)
        .with_runtime(if g.claude { "claude-code" } else { "langgraph" })
        .with_env(json!({"V": g.env.to_string()}));
    r.paused = g.paused;
    r.restart_epoch = g.restart_epoch;
    r.session_epoch = g.session_epoch;
    r.desired_changed_at = t0() - mins(30);
    r
}

/// The host and rows a generated world describes (names stay unique).
pub(super) fn build(w: &World, settings: &Settings) -> (Vec<WorkspaceRow>, Host) {
    let mut rows = Vec::new();
    let mut host = Host::default();
    for (i, g) in w.workspaces.iter().enumerate() {
        let n = i as u32 + 1;
        let id = wid(n);
        let r = g.row.as_ref().map(|rg| make_row(n, rg));
        let base = r.clone().unwrap_or_else(|| row(n));
        let current = built(
            &WorkspaceRow {
                paused: false,
                ..base.clone()
            }
            .with_state(DesiredState::Running),
            settings,
        );
        let stale = built(&base.clone().with_env(json!({"V": "stale"})), settings);
        for (j, cg) in g.containers.iter().enumerate() {
            let mut c = match cg.kind {
                Kind::Current | Kind::Foreign | Kind::OtherHost => container_for(&current, ""),
                Kind::Stale => container_for(&stale, ""),
                Kind::Legacy => legacy_container(id, ""),
            };
            c.id = format!("w{n}-c{j}");
            c.name = match cg.name {
                Name::Main => id.container_name(),
                Name::Prev => id.prev_container_name(),
                Name::Odd => format!("ws-odd-{n}-{j}"),
            };
            if matches!(cg.kind, Kind::Legacy) {
                c.name = id.container_name();
            }
            match cg.kind {
                Kind::Foreign => c.labels = BTreeMap::new(),
                Kind::OtherHost => {
                    c.labels.insert(LABEL_HOST.into(), "other".into());
                }
                _ => {}
            }
            // A stranger under another name may mount anything; berth does
            // not see it, and Docker's refusal to remove a volume it holds
            // is the executor's error to report, not a plan to test here.
            if matches!(
                (cg.kind, cg.name),
                (Kind::Foreign | Kind::OtherHost, Name::Odd)
            ) {
                c.material = None;
            }
            c.state = cg.state;
            c.health = cg.health;
            c.created = t0() - mins(cg.age_min + 1);
            c.started_at = (cg.state != ContainerState::Created).then(|| t0() - mins(cg.age_min));
            if host.by_name(&c.name).is_none() {
                host.containers.push(c);
            }
        }
        if let Some(kind) = g.configs_volume {
            let mut v = volume(id, &id.configs_volume(), "default");
            match kind {
                Kind::Current | Kind::Stale => {}
                Kind::Legacy => {
                    v.labels.retain(|k, _| k == LABEL_MANAGED);
                }
                Kind::Foreign => v.labels.clear(),
                Kind::OtherHost => {
                    v.labels.insert(LABEL_HOST.into(), "other".into());
                }
            }
            host.volumes.push(v);
        }
        if let Some(epoch) = g.sessions_epoch {
            let mut v = volume(id, &id.sessions_volume(), "default");
            v.labels
                .insert(LABEL_SESSION_EPOCH.into(), epoch.to_string());
            host.volumes.push(v);
        }
        if g.implicit_workspace_volume {
            host.volumes.push(crate::model::ObservedVolume {
                name: id.workspace_volume(),
                labels: BTreeMap::new(),
            });
        }
        rows.extend(r);
    }
    (rows, host)
}

pub(super) fn snapshot(rows: &[WorkspaceRow], host: &Host, w: &World) -> Snapshot {
    Snapshot {
        rows: rows.to_vec(),
        catalogue: Catalogue::seeded(),
        containers: host.containers.clone(),
        volumes: host.volumes.clone(),
        desired_complete: w.desired_complete,
        observed_complete: w.observed_complete,
        ..Snapshot::default()
    }
}
