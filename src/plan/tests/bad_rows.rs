//! Ten thousand generated bad rows in one pass: none panics, each is
//! `failed` with its reason and no action, and the good workspaces beside
//! them plan exactly as they do alone.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::model::{DeleteGuard, Reason, Status, WorkspaceAccess};
use crate::plan::{Memory, Snapshot, plan_pass};

const BAD_ROWS: u32 = 10_000;

/// xorshift64*: a fixed sequence, so a failure names a reproducible row.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn junk(&mut self) -> String {
        const ALPHABET: &[char] = &[
            'a', 'Z', '/', '.', ':', ' ', '@', '-', '\u{0}', 'é', '=', '\n',
        ];
        let len = 1 + self.below(24) as usize;
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }
    fn non_string(&mut self) -> Value {
        match self.below(5) {
            0 => json!(self.below(1000)),
            1 => json!(true),
            2 => Value::Null,
            3 => json!(["x"]),
            _ => json!({"nested": "x"}),
        }
    }
}

/// A row broken in one of twenty ways.
fn bad_row(rng: &mut Rng, n: u32) -> WorkspaceRow {
    let id = WorkspaceId(uuid::Uuid::from_u64_pair(rng.next(), rng.next()));
    let mut r = WorkspaceRow::test(id, t0());
    let junk = rng.junk();
    match n % 20 {
        0 => r = r.with_env(json!({"": junk})),
        1 => r = r.with_env(json!({ format!("K={junk}"): "v" })),
        2 => r = r.with_env(json!({ format!("K\u{0}{}", rng.below(9)): "v" })),
        3 => r = r.with_env(json!({ "KEY": rng.non_string() })),
        4 => {
            r = r.with_env(if rng.below(2) == 0 {
                json!([junk])
            } else {
                json!(junk)
            })
        }
        5 if n % 500 == 5 => r = r.with_env(json!({"BIG": "x".repeat(128 * 1024 + 1)})),
        5 => r = r.with_env(json!({"NUL": format!("a\u{0}{junk}")})),
        6 => r = r.with_workspace(None, WorkspaceAccess::ReadWrite),
        7 => r = r.with_workspace(Some(&format!("rel/{junk}")), WorkspaceAccess::ReadOnly),
        8 => {
            r = r.with_workspace(
                Some(&format!("/elsewhere/{}", rng.below(99))),
                WorkspaceAccess::ReadOnly,
            )
        }
        9 => {
            r = r.with_workspace(
                Some("/srv/workspaces/../../etc"),
                WorkspaceAccess::ReadWrite,
            )
        }
        10 => r = r.with_image(&format!("Bad Image {junk}")),
        11 => r = r.with_image(&format!("r.io/x@sha256:{}", "A".repeat(64))),
        12 => r = r.with_runtime(&format!("unknown-{junk}")),
        13 => r = r.with_config_files(json!({ format!("../{junk}"): "x" })),
        14 => r = r.with_config_files(json!({ "config.yaml": rng.non_string() })),
        15 => r = r.with_tier(4),
        16 => r = r.with_config_files(json!(["config.yaml"])),
        17 => r.template_path = Some(format!("templates/{junk}")),
        18 => r = r.with_config_files(json!({ "/etc/passwd": "x" })),
        _ if n % 1000 == 19 => {
            let chunk = "v".repeat(120 * 1024);
            let env: serde_json::Map<String, Value> =
                (0..9).map(|i| (format!("K{i}"), json!(chunk))).collect();
            r = r.with_env(env.into());
        }
        _ => r = r.with_env(json!({ format!("A={}", rng.below(9)): "v" })),
    }
    r
}

/// Fifty good workspaces: to create, in line, to replace, and orphans.
fn good_world(
    settings: &Settings,
) -> (
    Vec<WorkspaceRow>,
    Vec<crate::model::ObservedContainer>,
    BTreeMap<WorkspaceId, Memory>,
) {
    let mut rows = Vec::new();
    let mut containers = Vec::new();
    let mut memory = BTreeMap::new();
    for n in 1..=50 {
        let r = row(n).with_env(json!({"N": n.to_string()}));
        match n % 5 {
            0 => {}
            1 | 2 => containers.push(container_for(&built(&r, settings), &format!("good-{n}"))),
            3 => containers.push(container_for(
                &built(&row(n), settings),
                &format!("stale-{n}"),
            )),
            _ => {
                containers.push(container_for(&built(&r, settings), &format!("orphan-{n}")));
                let seen = Memory {
                    orphan_since: Some(t0() - mins(60)),
                    orphan_sightings: 1,
                    ..Memory::default()
                };
                memory.insert(r.id, seen);
                continue;
            }
        }
        rows.push(r);
    }
    (rows, containers, memory)
}

#[test]
fn ten_thousand_bad_rows_fail_alone_and_leave_the_others_planned_as_before() {
    // A count guard that lets every planned removal through: the test
    // compares plans, not the guard.
    let settings = Settings {
        delete_guard: DeleteGuard::Count(100),
        ..Settings::test()
    };
    let (good_rows, containers, memory) = good_world(&settings);
    let alone = Snapshot {
        rows: good_rows.clone(),
        catalogue: Catalogue::seeded(),
        containers: containers.clone(),
        desired_complete: true,
        observed_complete: true,
        memory: memory.clone(),
        ..Snapshot::default()
    };
    let before = plan_pass(&alone, &settings, t0());
    let removals: usize = before.plans.iter().map(Plan::guarded_removals).sum();
    let replaces = before
        .plans
        .iter()
        .filter(|p| p.restore.as_ref().is_some_and(|r| r.previous.is_some()));
    let creates = before
        .plans
        .iter()
        .filter(|p| ops(p).first() == Some(&"ensure_image"));
    assert_eq!((removals, replaces.count(), creates.count()), (10, 10, 20));

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut mixed = alone.clone();
    let bad: Vec<WorkspaceRow> = (0..BAD_ROWS).map(|n| bad_row(&mut rng, n)).collect();
    for (i, r) in bad.iter().enumerate().filter(|(i, _)| i % 10 == 0) {
        // Every tenth bad row already has a container: it stays untouched.
        let fixed = WorkspaceRow::test(r.id, t0());
        mixed.containers.push(container_for(
            &built(&fixed, &settings),
            &format!("bad-{i}"),
        ));
    }
    mixed.rows.extend(bad.iter().cloned());
    let after = plan_pass(&mixed, &settings, t0());

    let good: Vec<_> = after
        .plans
        .iter()
        .filter(|p| before.plans.iter().any(|b| b.id == p.id))
        .collect();
    assert_eq!(good.len(), before.plans.len());
    for (b, a) in before.plans.iter().zip(good) {
        assert_eq!(
            b, a,
            "workspace {} planned differently beside the bad rows",
            b.id
        );
    }
    let mut reasons = BTreeMap::new();
    for r in &bad {
        let p = after
            .plans
            .iter()
            .find(|p| p.id == r.id)
            .expect("a plan per bad row");
        let status = p.status.as_ref().expect("a status");
        // One with a serving container is a change blocked, naming why.
        let serving = mixed.containers.iter().any(|c| c.workspace() == Some(r.id));
        let mut reason = status.reason.expect("a reason");
        if serving {
            assert_eq!(status.status, Status::Degraded, "{:?}", status);
            assert_eq!(reason, Reason::ChangeBlocked);
            let detail = status.detail.as_deref().unwrap_or_default();
            reason = if detail.contains("tier_not_allowed change") {
                Reason::TierNotAllowed
            } else {
                assert!(detail.contains("invalid_spec change"), "{detail}");
                Reason::InvalidSpec
            };
        } else {
            assert_eq!(status.status, Status::Failed, "{:?}", status);
        }
        assert!(
            matches!(reason, Reason::InvalidSpec | Reason::TierNotAllowed),
            "{reason}"
        );
        assert!(status.detail.as_ref().is_some_and(|d| !d.is_empty()));
        // The row's own fault, named in words that stand while it does:
        // another fault is another entry on the trail.
        assert!(status.steady, "{status:?}");
        assert!(p.actions.is_empty(), "{} got {:?}", r.id, p.actions);
        *reasons.entry(reason).or_insert(0) += 1;
    }
    assert_eq!(reasons.values().sum::<u32>(), BAD_ROWS);
    assert_eq!(reasons.get(&Reason::TierNotAllowed), Some(&(BAD_ROWS / 20)));
}
