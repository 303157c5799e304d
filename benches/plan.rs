//! Times one planner pass over 10 000 workspaces and prints the figure.
//! Run: `cargo bench --bench plan`. A measurement, not an assertion.
//!
//! The host: 8 000 workspaces in line with their rows (running, healthy),
//! 1 000 without a container, 500 whose env changed (a replace each) and
//! 500 stopped; every row has a small env and a config file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth::model::{
    ContainerState, DesiredState, Health, ObservedContainer, WorkspaceId, WorkspaceRow,
};
use berth::plan::{Catalogue, Settings, Snapshot, plan_pass, spec};
use chrono::{DateTime, Utc};

const WORKSPACES: u32 = 10_000;
const RUNS: usize = 15;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and then one small pass only checks that the benchmark runs.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (workspaces, runs) = if measuring {
        (WORKSPACES, RUNS)
    } else {
        (500, 1)
    };
    let settings = Settings::test();
    let now = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
    let snapshot = host(&settings, now, workspaces);
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut actions = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let pass = plan_pass(&snapshot, &settings, now);
        times.push(start.elapsed());
        actions = pass.plans.iter().map(|p| p.actions.len()).sum();
    }
    times.sort();
    let median = times[runs / 2];
    println!(
        "plan_pass over {workspaces} workspaces ({actions} actions): median {:.1} ms, min {:.1} ms, max {:.1} ms over {runs} runs ({:.1} µs per workspace)",
        ms(median),
        ms(times[0]),
        ms(times[runs - 1]),
        median.as_secs_f64() * 1e6 / f64::from(workspaces),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn host(settings: &Settings, now: DateTime<Utc>, workspaces: u32) -> Snapshot {
    let catalogue = Catalogue::seeded();
    let runtimes = ["langgraph", "claude-code", "codex", "crewai"];
    let mut rows = Vec::new();
    let mut containers = Vec::new();
    for n in 0..workspaces {
        let id = WorkspaceId(uuid::Uuid::from_u128(
            (u128::from(n) << 96) | 0x4000_8000_0000_0000_0001,
        ));
        let mut row = WorkspaceRow::test(id, now - chrono::TimeDelta::days(1))
            .with_runtime(runtimes[n as usize % runtimes.len()])
            .with_tier(1 + (n % 3) as i32)
            .with_env(serde_json::json!({"OPENAI_API_KEY": format!("sk-{n}"), "MODEL": "m"}));
        let Ok(current) = spec(&row, &catalogue, settings) else {
            continue;
        };
        match n % 20 {
            0 | 1 => {}
            2 => {
                containers.push(container(&current, n, now));
                row = row.with_env(serde_json::json!({"MODEL": "changed"}));
            }
            3 => {
                containers.push(container(&current, n, now));
                row = row.with_state(DesiredState::Stopped);
            }
            _ => containers.push(container(&current, n, now)),
        }
        rows.push(row);
    }
    Snapshot {
        rows,
        catalogue,
        containers,
        desired_complete: true,
        observed_complete: true,
        images: BTreeMap::new(),
        refresh_failures: BTreeMap::new(),
        ..Snapshot::default()
    }
}

fn container(spec: &berth::model::ContainerSpec, n: u32, now: DateTime<Utc>) -> ObservedContainer {
    ObservedContainer {
        id: format!("{n:064x}"),
        name: spec.name.clone(),
        labels: spec.labels.clone(),
        state: ContainerState::Running,
        health: Health::Healthy,
        image: spec.image.to_string(),
        image_id: "sha256:bench".into(),
        created: now - chrono::TimeDelta::hours(3),
        started_at: Some(now - chrono::TimeDelta::hours(3)),
        finished_at: None,
        restart_count: 0,
        exit_code: None,
        oom_killed: false,
        networks: None,
        material: None,
    }
}
