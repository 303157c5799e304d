//! Rollout waves from plain data: the canary alone, then waves of
//! max-parallel, halts, a replace found under way.

use super::*;

fn key() -> RolloutKey {
    RolloutKey {
        runtime: "agent".into(),
        track: Track::Pin("stable".into()),
        to: Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap(),
    }
}

fn replace() -> Replace {
    Replace {
        key: key(),
        from: None,
        image: "reg/agent@sha256:bb".into(),
    }
}

fn keys(completed: Vec<Completed>) -> Vec<RolloutKey> {
    completed.into_iter().map(|c| c.key).collect()
}

fn ids(n: u128) -> Vec<WorkspaceId> {
    (1..=n)
        .map(|i| WorkspaceId(uuid::Uuid::from_u128(i)))
        .collect()
}

const LIMITS: Limits = Limits {
    canary: 1,
    max_parallel: 3,
    max_failure_ratio: 0.0,
};

#[tokio::test(start_paused = true)]
async fn a_replace_found_under_way_holds_the_canary_place_and_its_failure_halts() {
    let mut r = Rollouts::default();
    let ws = ids(3);
    let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    // A restarted berth finds ws[0] mid-replace onto the new digest.
    r.adopt(&replace(), ws[0]);
    r.adopt(&replace(), ws[0]);
    assert!(
        matches!(gate(&mut r, ws[1]), Gate::Wait(_)),
        "the canary place is taken by the replace under way"
    );
    assert_eq!(gate(&mut r, ws[0]), Gate::Go, "it goes on");
    let halts = r.failed(ws[0], &LIMITS);
    assert_eq!(halts.len(), 1, "its failure counts");
    assert_eq!((halts[0].failed, halts[0].tried), (1, 1));
    assert_eq!(gate(&mut r, ws[2]), Gate::Halted);
}

#[tokio::test(start_paused = true)]
async fn the_canary_goes_alone_then_waves_of_max_parallel() {
    let mut r = Rollouts::default();
    let ws = ids(6);
    let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    assert_eq!(gate(&mut r, ws[0]), Gate::Go);
    assert!(
        matches!(gate(&mut r, ws[1]), Gate::Wait(_)),
        "the canary goes alone"
    );
    r.succeeded(ws[0]);
    for id in &ws[1..4] {
        assert_eq!(gate(&mut r, *id), Gate::Go);
    }
    assert!(
        matches!(gate(&mut r, ws[4]), Gate::Wait(_)),
        "at most max-parallel"
    );
    // A wave is gated on the whole wave before it, not on one slot.
    r.succeeded(ws[1]);
    r.succeeded(ws[2]);
    assert!(
        matches!(gate(&mut r, ws[4]), Gate::Wait(_)),
        "wave 1 is not finished"
    );
    r.succeeded(ws[3]);
    assert_eq!(gate(&mut r, ws[4]), Gate::Go);
    assert_eq!(r.summary(), (1, 0, 2), "the second wave after the canary");
}

#[tokio::test(start_paused = true)]
async fn a_replace_that_did_not_start_gives_its_place_in_the_wave_back() {
    let mut r = Rollouts::default();
    let ws = ids(6);
    let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    assert_eq!(gate(&mut r, ws[0]), Gate::Go);
    r.succeeded(ws[0]);
    for id in &ws[1..4] {
        assert_eq!(gate(&mut r, *id), Gate::Go);
    }
    // Its pull failed: nothing was touched, another takes its place.
    r.release(ws[1]);
    assert_eq!(gate(&mut r, ws[4]), Gate::Go);
    assert!(matches!(gate(&mut r, ws[5]), Gate::Wait(_)));
    assert_eq!(r.summary(), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn the_summary_counts_rollouts_and_names_the_wave() {
    let mut r = Rollouts::default();
    let ws = ids(5);
    r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO);
    assert_eq!(r.summary(), (1, 0, 0), "the canary is wave 0");
    r.succeeded(ws[0]);
    for id in &ws[1..4] {
        r.gate(&replace(), *id, &LIMITS, Duration::ZERO);
    }
    for id in &ws[1..4] {
        r.succeeded(*id);
    }
    r.gate(&replace(), ws[4], &LIMITS, Duration::ZERO);
    assert_eq!(r.summary(), (1, 0, 2), "1 canary + 3 done: wave 2");
    let col = r.describe(&key(), "waiting");
    assert_eq!(
        (col["wave"].as_u64(), col["done"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(col["ring"], "stable");
    r.failed(ws[4], &LIMITS);
    assert_eq!(r.summary(), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_wakes_the_waiting_workspaces() {
    let mut r = Rollouts::default();
    let ws = ids(3);
    assert_eq!(r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO), Gate::Go);
    assert!(matches!(
        r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO),
        Gate::Wait(_)
    ));
    assert!(matches!(
        r.gate(&replace(), ws[2], &LIMITS, Duration::ZERO),
        Gate::Wait(_)
    ));
    assert!(r.take_wakeups().is_empty(), "no slot freed yet");
    r.succeeded(ws[0]);
    assert_eq!(r.take_wakeups(), BTreeSet::from([ws[1], ws[2]]));
    assert!(r.take_wakeups().is_empty(), "each wake-up once");
}

#[tokio::test(start_paused = true)]
async fn the_waiting_wake_when_a_wave_ends_not_at_each_replace() {
    let mut r = Rollouts::default();
    let ws = ids(6);
    let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    gate(&mut r, ws[0]);
    r.succeeded(ws[0]);
    for id in &ws[1..4] {
        assert_eq!(gate(&mut r, *id), Gate::Go);
    }
    r.take_wakeups();
    assert!(matches!(gate(&mut r, ws[4]), Gate::Wait(_)));
    r.succeeded(ws[1]);
    r.succeeded(ws[2]);
    assert!(r.take_wakeups().is_empty(), "the wave is not over");
    r.succeeded(ws[3]);
    assert_eq!(r.take_wakeups(), BTreeSet::from([ws[4]]));
}

#[tokio::test(start_paused = true)]
async fn a_digest_pinned_again_after_its_rollout_starts_over() {
    let mut r = Rollouts::default();
    let id = ids(1)[0];
    let debounce = Duration::from_secs(5);
    tokio::time::advance(debounce).await;
    r.gate(&replace(), id, &LIMITS, debounce);
    tokio::time::advance(debounce).await;
    assert_eq!(r.gate(&replace(), id, &LIMITS, debounce), Gate::Go);
    r.succeeded(id);
    assert_eq!(keys(r.completed(&BTreeSet::new())), vec![key()]);
    assert!(r.by_key.is_empty(), "a finished rollout is dropped");
    // Pinned away and back later: the debounce and the canary again.
    assert_eq!(
        r.gate(&replace(), id, &LIMITS, debounce),
        Gate::Wait(debounce)
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollout_nobody_wants_any_more_is_dropped_without_completing() {
    let mut r = Rollouts::default();
    let id = ids(1)[0];
    r.gate(&replace(), id, &LIMITS, Duration::from_secs(5));
    assert!(
        keys(r.completed(&BTreeSet::new())).is_empty(),
        "nothing was done"
    );
    assert_eq!(r.summary(), (0, 0, 0), "and nothing is under way");
}

#[tokio::test(start_paused = true)]
async fn a_workspace_that_turned_away_gives_its_slot_back() {
    let mut r = Rollouts::default();
    let ws = ids(2);
    assert_eq!(r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO), Gate::Go);
    assert!(matches!(
        r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO),
        Gate::Wait(_)
    ));
    r.abandon(ws[0], Some(&key()));
    assert!(
        r.take_wakeups().is_empty(),
        "still heading for this rollout"
    );
    r.abandon(ws[0], None);
    assert_eq!(r.take_wakeups(), BTreeSet::from([ws[1]]));
    assert_eq!(r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO), Gate::Go);
}

#[tokio::test(start_paused = true)]
async fn a_failed_canary_halts_and_nothing_more_starts() {
    let mut r = Rollouts::default();
    let ws = ids(3);
    assert_eq!(r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO), Gate::Go);
    let halts = r.failed(ws[0], &LIMITS);
    assert_eq!(halts.len(), 1);
    assert_eq!((halts[0].failed, halts[0].tried), (1, 1));
    assert_eq!(
        r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO),
        Gate::Halted
    );
}

#[tokio::test(start_paused = true)]
async fn a_pin_must_hold_for_the_debounce_before_anything_starts() {
    let mut r = Rollouts::default();
    let id = ids(1)[0];
    let debounce = Duration::from_secs(5);
    assert_eq!(
        r.gate(&replace(), id, &LIMITS, debounce),
        Gate::Wait(debounce)
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(r.gate(&replace(), id, &LIMITS, debounce), Gate::Go);
}

#[tokio::test(start_paused = true)]
async fn a_ratio_tolerates_failures_up_to_it() {
    let limits = Limits {
        canary: 1,
        max_parallel: 4,
        max_failure_ratio: 0.5,
    };
    let mut r = Rollouts::default();
    let ws = ids(4);
    assert_eq!(r.gate(&replace(), ws[0], &limits, Duration::ZERO), Gate::Go);
    r.succeeded(ws[0]);
    assert_eq!(r.gate(&replace(), ws[1], &limits, Duration::ZERO), Gate::Go);
    assert!(
        r.failed(ws[1], &limits).is_empty(),
        "1 of 2 is not above 0.5"
    );
    assert_eq!(r.gate(&replace(), ws[2], &limits, Duration::ZERO), Gate::Go);
    assert_eq!(r.failed(ws[2], &limits).len(), 1, "2 of 3 is");
}

#[tokio::test(start_paused = true)]
async fn a_rollout_completes_when_nothing_is_wanted_or_running() {
    let mut r = Rollouts::default();
    let id = ids(1)[0];
    r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    assert!(
        keys(r.completed(&BTreeSet::new())).is_empty(),
        "still in progress"
    );
    r.succeeded(id);
    assert_eq!(
        keys(r.completed(&BTreeSet::from([key()]))),
        Vec::<RolloutKey>::new()
    );
    assert_eq!(keys(r.completed(&BTreeSet::new())), vec![key()]);
    assert!(
        keys(r.completed(&BTreeSet::new())).is_empty(),
        "reported once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_workspace_that_was_not_serving_proves_nothing_about_the_image() {
    let mut r = Rollouts::default();
    let ws = ids(4);
    let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    // The canary drawn is a workspace crash looping before the rollout.
    assert_eq!(gate(&mut r, ws[0]), Gate::Go);
    r.unproven(&key(), ws[0]);
    assert!(
        r.failed(ws[0], &LIMITS).is_empty(),
        "its failure halts nothing"
    );
    assert_eq!(
        gate(&mut r, ws[1]),
        Gate::Go,
        "the canary place goes to a workspace that serves"
    );
    assert!(
        matches!(gate(&mut r, ws[2]), Gate::Wait(_)),
        "still a canary wave of one"
    );
    let col = r.describe(&key(), "replacing");
    assert_eq!(
        (col["failed"].as_u64(), col["not_counted"].as_u64()),
        (Some(0), Some(1))
    );
    // A serving workspace's failure halts, and the halt names it.
    let halts = r.failed(ws[1], &LIMITS);
    assert_eq!(halts.len(), 1);
    assert_eq!((halts[0].failed, halts[0].tried), (1, 1));
    assert_eq!(halts[0].failed_ids, vec![ws[1]]);
    // Marking a workspace that holds no place changes nothing.
    r.unproven(&key(), ws[3]);
    assert!(r.by_key[&key()].unproven.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_completed_rollout_names_the_replaces_it_did_not_count() {
    let mut r = Rollouts::default();
    let ws = ids(2);
    let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    assert_eq!(gate(&mut r, ws[0]), Gate::Go);
    r.unproven(&key(), ws[0]);
    r.failed(ws[0], &LIMITS);
    assert_eq!(gate(&mut r, ws[1]), Gate::Go);
    r.succeeded(ws[1]);
    let done = r.completed(&BTreeSet::new());
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].not_counted, BTreeSet::from([ws[0]]));
}

#[tokio::test(start_paused = true)]
async fn failures_an_earlier_berth_saw_count_and_halt_before_a_new_canary() {
    let mut r = Rollouts::default();
    let ws = ids(2);
    assert!(!r.knows(&key()));
    let halt = r
        .seed_failed(&replace(), &[ws[0]], &[], &LIMITS, true)
        .expect("the canary's failure halts it");
    assert_eq!((halt.failed, halt.tried), (1, 1));
    assert_eq!(halt.failed_ids, vec![ws[0]]);
    assert!(r.knows(&key()));
    assert_eq!(
        r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO),
        Gate::Halted,
        "no second canary"
    );
    // Counted against the replaces done, under a ratio they stay within,
    // they only count.
    let lenient = Limits {
        max_failure_ratio: 0.5,
        ..LIMITS
    };
    let mut r = Rollouts::default();
    assert_eq!(
        r.seed_failed(&replace(), &[ws[0]], &ids(3)[1..], &lenient, true),
        None
    );
    let col = r.describe(&key(), "waiting");
    assert_eq!(
        (col["failed"].as_u64(), col["done"].as_u64()),
        (Some(1), Some(2))
    );
    // With nothing of it left to carry (not kept), only a halt comes of
    // it: one that does not halt is not started, nor read as completed.
    let mut r = Rollouts::default();
    assert_eq!(
        r.seed_failed(&replace(), &[ws[0]], &ids(3)[1..], &lenient, false),
        None
    );
    assert!(!r.knows(&key()));
    assert!(r.completed(&Default::default()).is_empty());
    let halt = r.seed_failed(&replace(), &[ws[0]], &[], &LIMITS, false);
    assert!(halt.is_some(), "a halt comes of it all the same");
}

#[test]
fn a_rows_rollout_column_names_its_replace_under_way_by_runtime_track_and_target() {
    let r = Rollouts::default();
    let column = r.describe(&key(), "replacing");
    assert!(Rollouts::column_names(Some(&column), &key()));
    let waiting = r.describe(&key(), "waiting");
    assert!(
        !Rollouts::column_names(Some(&waiting), &key()),
        "a row waiting for its wave was not touched"
    );
    let mut other_ring = key();
    other_ring.track = Track::Pin("canary".into());
    assert!(!Rollouts::column_names(Some(&column), &other_ring));
    let mut other_target = key();
    other_target.to = Digest::parse(&format!("sha256:{}", "c".repeat(64))).unwrap();
    assert!(!Rollouts::column_names(Some(&column), &other_target));
    assert!(!Rollouts::column_names(None, &key()));
}

#[tokio::test(start_paused = true)]
async fn the_column_of_an_unproven_replace_says_so_for_the_next_instance() {
    let mut r = Rollouts::default();
    let ws = ids(2);
    for id in &ws {
        r.gate(&replace(), *id, &LIMITS, Duration::ZERO);
    }
    r.unproven(&key(), ws[0]);
    let judged = r.replacing(&key(), ws[0]);
    assert!(Rollouts::column_names(Some(&judged), &key()));
    assert!(Rollouts::column_unproven(Some(&judged)));
    assert!(!Rollouts::column_unproven(Some(
        &r.replacing(&key(), ws[1])
    )));
    assert!(!Rollouts::column_unproven(None));
}

/// The catalogue with the pin of `key()` set at `at`.
fn pinned_at(at: chrono::DateTime<chrono::Utc>) -> crate::plan::Catalogue {
    crate::plan::Catalogue::new(
        [crate::model::RuntimeRow::new("agent")],
        [crate::model::PinRow {
            template_name: "agent".into(),
            ring: "stable".into(),
            digest: key().to,
            updated_by: "t".into(),
            updated_at: at,
            note: None,
        }],
    )
}

#[tokio::test(start_paused = true)]
async fn a_halted_digest_pinned_again_starts_afresh_at_the_canary() {
    let mut r = Rollouts::default();
    let ws = ids(3);
    let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
    assert_eq!(gate(&mut r, ws[0]), Gate::Go);
    assert_eq!(r.failed(ws[0], &LIMITS).len(), 1, "the canary halts it");
    let halted_at = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
    r.halted_at_pin(&key(), Some(halted_at));
    assert_eq!(gate(&mut r, ws[1]), Gate::Halted);
    // The pin as it was when the rollout halted: it stays halted.
    assert!(r.forget_repinned(&pinned_at(halted_at)).is_empty());
    assert_eq!(gate(&mut r, ws[1]), Gate::Halted);
    // Pinned anew (the same digest): a fresh rollout, its canary first.
    let later = halted_at + chrono::TimeDelta::minutes(5);
    assert_eq!(r.forget_repinned(&pinned_at(later)), vec![key()]);
    assert_eq!(gate(&mut r, ws[1]), Gate::Go, "the new canary");
    assert!(matches!(gate(&mut r, ws[2]), Gate::Wait(_)), "alone");
}
