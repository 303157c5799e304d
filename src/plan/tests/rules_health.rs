//! A container that was ready and then reports unhealthy: given the
//! provision timeout to recover, then restarted in place, the row online
//! with what berth sees and will do, a crash loop when it keeps failing;
//! one detached from its network, joined again.

use super::*;
use crate::model::{Health, Reason, Status};
use crate::plan::{Plan, Why};

/// The workspace's container, ready before (this process saw it so),
/// now reporting `health`.
fn ready_before(
    s: &Settings,
    health: Health,
) -> (
    WorkspaceRow,
    [crate::model::ObservedContainer; 1],
    crate::plan::Memory,
) {
    let r = row(1);
    let mut c = container_for(&built(&r, s), "c1");
    c.health = health;
    let memory = crate::plan::Memory {
        ready_container: Some("c1".into()),
        ..Default::default()
    };
    (r, [c], memory)
}

fn at(
    s: &Settings,
    r: &WorkspaceRow,
    cs: &[crate::model::ObservedContainer],
    memory: &crate::plan::Memory,
    now: DateTime<Utc>,
) -> Plan {
    let mut f = facts_for(s, r, cs, &[]);
    f.memory = memory.clone();
    plan_at(&f, now)
}

#[test]
fn an_unhealthy_container_that_was_ready_is_restarted_after_the_provision_timeout() {
    let s = Settings::test();
    let (r, cs, memory) = ready_before(&s, Health::Unhealthy);
    let later = t0() + TimeDelta::hours(3);
    let p = at(&s, &r, &cs, &memory, later);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let st = p.status.clone().unwrap();
    assert_eq!((st.status, st.reason), (Status::Online, None));
    assert!(
        detail(&p).contains("reports unhealthy since"),
        "{}",
        detail(&p)
    );
    assert!(detail(&p).contains("restarts it at"), "{}", detail(&p));
    assert_eq!(p.memory.unhealthy_since, Some(later));
    assert_eq!(p.requeue_after, Some(std::time::Duration::from_secs(600)));

    // Still unhealthy a minute short of the timeout: nothing yet.
    let p = at(&s, &r, &cs, &p.memory, later + mins(9));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    // At the timeout, on an incomplete picture of the engine: nothing.
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.memory = p.memory.clone();
    f.observed_complete = false;
    assert!(plan_at(&f, later + mins(10)).actions.is_empty());
    // On a complete one: restarted in place, nothing else.
    let p = at(&s, &r, &cs, &p.memory, later + mins(10));
    assert_eq!(ops(&p), ["restart"]);
    assert_eq!(
        p.actions[0].why,
        Why::Unhealthy { since: later },
        "{}",
        whys(&p)[0]
    );
    assert!(detail(&p).starts_with("restarted at"), "{}", detail(&p));
    assert_eq!(p.status.as_ref().unwrap().status, Status::Online);

    // Starting again after the restart: waited for, never timed out.
    let mut starting = cs.clone();
    starting[0].health = Health::Starting;
    let p = at(&s, &r, &starting, &p.memory, later + TimeDelta::hours(2));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.status.as_ref().unwrap().status, Status::Online);
    assert!(
        detail(&p).contains("waiting for it to report healthy"),
        "{}",
        detail(&p)
    );

    // Healthy again: online, plainly, and the episode forgotten.
    let mut healthy = cs.clone();
    healthy[0].health = Health::Healthy;
    let p = at(&s, &r, &healthy, &p.memory, later + TimeDelta::hours(2));
    assert_eq!(
        p.status,
        Some(crate::plan::StatusUpdate::plain(Status::Online))
    );
    assert_eq!(p.memory.unhealthy_since, None);
    assert_eq!(p.memory.health_restarted_at, None);
}

#[test]
fn a_restarted_berth_or_berth_plan_judges_it_by_the_row_and_times_it_anew() {
    // No memory: the row shows the container online, so it was ready.
    let s = Settings::test();
    let (mut r, cs, _) = ready_before(&s, Health::Unhealthy);
    r.status = Some(Status::Online);
    r.container_id = Some("c1".into());
    let later = t0() + TimeDelta::hours(3);
    let p = at(&s, &r, &cs, &crate::plan::Memory::default(), later);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.status.as_ref().unwrap().status, Status::Online);
    assert_eq!(p.memory.unhealthy_since, Some(later));
}

#[test]
fn a_container_never_ready_is_not_restarted_but_times_out() {
    let s = Settings::test();
    let r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.health = Health::Unhealthy;
    let p = at(
        &s,
        &r,
        &[c],
        &crate::plan::Memory::default(),
        t0() + mins(11),
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
}

#[test]
fn one_that_keeps_failing_its_check_is_a_crash_loop_restarted_no_faster() {
    let s = Settings::test();
    let (r, cs, mut memory) = ready_before(&s, Health::Unhealthy);
    let mut now = t0() + TimeDelta::hours(3);
    let mut restarts = 0;
    // The check fails again at once after each restart: berth restarts
    // it once per provision timeout, not at every pass.
    for _ in 0..(s.crash_loop_restarts * 3) {
        let p = at(&s, &r, &cs, &memory, now);
        if ops(&p) == ["restart"] {
            restarts += 1;
        }
        memory = p.memory;
        now += mins(1);
    }
    // One restart per provision timeout (10 min) at most.
    assert!(restarts <= 2, "{restarts} restarts in 15 min");
    assert!(restarts >= 1);
}

#[test]
fn a_running_container_detached_from_its_network_is_joined_again() {
    let s = Settings::test();
    let r = row(1);
    let spec = built(&r, &s);
    let network = spec.material.network_mode.clone();
    let mut c = container_for(&spec, "c1");
    c.networks = Some(vec![]);
    let p = plan_at(
        &facts_for(&s, &r, std::slice::from_ref(&c), &[]),
        t0() + mins(1),
    );
    assert_eq!(ops(&p), ["connect"]);
    assert_eq!(
        p.actions[0].op,
        crate::plan::Op::Connect {
            target: crate::plan::Target::Id("c1".into()),
            network: network.clone(),
            aliases: spec.material.network_aliases.clone(),
        }
    );
    assert!(whys(&p)[0].contains(&network), "{}", whys(&p)[0]);
    // On it, or not known, or on an incomplete picture: nothing.
    let idle = |c: &crate::model::ObservedContainer| {
        plan_at(
            &facts_for(&s, &r, std::slice::from_ref(c), &[]),
            t0() + mins(1),
        )
        .actions
        .is_empty()
    };
    c.networks = Some(vec![network]);
    assert!(idle(&c));
    c.networks = None;
    assert!(idle(&c));
    c.networks = Some(vec![]);
    let mut f = facts_for(&s, &r, std::slice::from_ref(&c), &[]);
    f.observed_complete = false;
    assert!(plan_at(&f, t0() + mins(1)).actions.is_empty());
}

#[test]
fn a_container_paused_in_docker_is_left_so_and_the_row_says_it_answers_nothing() {
    let s = Settings::test();
    let (r, mut cs, memory) = ready_before(&s, Health::Healthy);
    cs[0].state = crate::model::ContainerState::Paused;
    let p = at(&s, &r, &cs, &memory, t0() + mins(1));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.status.as_ref().map(|s| s.status), Some(Status::Online));
    assert!(detail(&p).contains("paused in Docker"), "{}", detail(&p));
    // Paused before it was ever ready: waiting, then timed out.
    let p = at(&s, &r, &cs, &crate::plan::Memory::default(), t0() + mins(1));
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
    let p = at(
        &s,
        &r,
        &cs,
        &crate::plan::Memory::default(),
        t0() + mins(11),
    );
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
}

#[test]
fn a_restart_by_anyone_begins_a_new_count_of_unhealthiness() {
    let s = Settings::test();
    let (r, cs, memory) = ready_before(&s, Health::Unhealthy);
    let later = t0() + TimeDelta::hours(3);
    let p = at(&s, &r, &cs, &memory, later);
    assert_eq!(p.memory.unhealthy_since, Some(later));
    // Restarted by hand 9 minutes in, unhealthy again: a whole timeout
    // from now, not a restart a minute later.
    let mut again = cs.clone();
    again[0].started_at = Some(later + mins(9));
    let p = at(&s, &r, &again, &p.memory, later + mins(10));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.memory.unhealthy_since, Some(later + mins(10)));
}

#[test]
fn a_container_on_the_hosts_network_or_put_back_for_another_spec_is_not_joined_to_the_new_one() {
    let s = Settings::test();
    let r = row(1);
    let spec = built(&r, &s);
    let mut c = container_for(&spec, "c1");
    c.networks = Some(vec!["host".into()]);
    c.material.as_mut().unwrap().network_mode = "host".into();
    let p = plan_at(
        &facts_for(&s, &r, std::slice::from_ref(&c), &[]),
        t0() + mins(1),
    );
    assert!(!ops(&p).contains(&"connect"), "{:?}", p.actions);
    // Made on another network than the spec's: joined to its own.
    c.material.as_mut().unwrap().network_mode = "older-net".into();
    c.networks = Some(vec![]);
    let p = plan_at(
        &facts_for(&s, &r, std::slice::from_ref(&c), &[]),
        t0() + mins(1),
    );
    assert!(
        matches!(&p.actions[0].op, crate::plan::Op::Connect { network, .. } if network == "older-net"),
        "{:?}",
        p.actions
    );
}

#[test]
fn an_unhealthy_container_in_a_crash_loop_says_so_and_is_still_restarted_once_per_timeout() {
    let s = Settings::test();
    let (r, cs, mut memory) = ready_before(&s, Health::Unhealthy);
    let now = t0() + TimeDelta::hours(3);
    memory.restarts = (0..s.crash_loop_restarts)
        .map(|i| now - mins(i64::from(i) + 1))
        .collect();
    memory.unhealthy_since = Some(now - mins(10));
    memory.unhealthy_start = cs[0].started_at;
    let p = at(&s, &r, &cs, &memory, now);
    assert_eq!(ops(&p), ["restart"], "{:?}", p.actions);
    assert_eq!(reason(&p), Some(Reason::CrashLoop));
}

#[test]
fn a_paused_container_is_not_replaced_by_a_change() {
    let s = Settings::test();
    let mut paused = container_for(&built(&row(1), &s), "c1");
    paused.state = crate::model::ContainerState::Paused;
    let edited = row(1).with_env(serde_json::json!({"A": "2"}));
    let p = plan_at(&facts_for(&s, &edited, &[paused], &[]), t0());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
    assert!(detail(&p).contains("paused in Docker"), "{}", detail(&p));
}

#[test]
fn an_unhealthy_old_container_of_a_blocked_change_is_restarted_and_the_backoff_kept() {
    let s = Settings::test();
    let edited = row(1).with_env(serde_json::json!({"A": "2"}));
    let mut old = container_for(&built(&row(1), &s), "c1");
    old.health = Health::Unhealthy;
    let mut f = facts_for(&s, &edited, std::slice::from_ref(&old), &[]);
    f.memory.ready_container = Some("c1".into());
    f.memory.unhealthy_since = Some(t0() - mins(10));
    f.memory.unhealthy_start = old.started_at;
    let failure = crate::plan::Failure {
        reason: Reason::ImageNotFound,
        phase: crate::plan::Phase::Pull,
        message: "manifest unknown".into(),
        retry_at: t0() + mins(5),
        hash: built(&edited, &s).hash,
    };
    f.memory.failure = Some(failure.clone());
    let p = plan_at(&f, t0());
    assert_eq!(ops(&p), ["restart"], "{:?}", p.actions);
    assert_eq!(
        p.memory.failure,
        Some(failure),
        "the change's backoff stays"
    );
}
