//! The observed cache against the real engine: events, a cut stream and
//! its relist, name clashes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth::model::{
    ContainerState, Health, LABEL_HOST, LABEL_MANAGED, LABEL_WORKSPACE, ObservedContainer,
    WorkspaceId,
};
use berth::observed::{Observed, Observer, Trigger};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use tokio_util::sync::CancellationToken;

use crate::harness::proxy::SocketProxy;
use crate::harness::{self, DockerScope};

struct Running {
    cache: Observed,
    triggers: tokio::sync::mpsc::UnboundedReceiver<Trigger>,
    cancel: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn observe(docker: Docker, host: &str, relist_every: Duration) -> Running {
    let (observer, cache, triggers) = Observer::new(docker, host, relist_every);
    let cancel = CancellationToken::new();
    tokio::spawn(observer.run(cancel.clone()));
    let running = Running {
        cache,
        triggers,
        cancel,
    };
    wait_for(&running.cache, 10, "the first full list", |c| {
        c.is_complete()
    })
    .await;
    running
}

async fn wait_for(cache: &Observed, secs: u64, what: &str, done: impl Fn(&Observed) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(cache) {
        assert!(Instant::now() < deadline, "{what}: not within {secs}s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A workspace-like container owned by `host` (or unlabelled when `host`
/// is None), started.
async fn container(scope: &DockerScope, name: &str, host: Option<&str>, tag: &str) -> String {
    let image = format!("{}/berth-test/agent:{tag}", harness::env().registry);
    crate::harness::docker::pull(&scope.docker, &image).await;
    let mut labels = scope.labels();
    if let Some(host) = host {
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_HOST.into(), host.into());
        labels.insert(LABEL_WORKSPACE.into(), uuid::Uuid::new_v4().to_string());
    }
    let body = ContainerCreateBody {
        image: Some(image),
        labels: Some(labels),
        ..Default::default()
    };
    scope.run(name, body).await
}

async fn remove(docker: &Docker, id: &str) {
    let opts = RemoveContainerOptionsBuilder::new().force(true).build();
    docker.remove_container(id, Some(opts)).await.unwrap();
}

fn host_id() -> String {
    format!("t-{}", harness::unique())
}

/// What must agree between two lists: id, name, state, labels.
fn essence(containers: &[ObservedContainer], host: &str) -> Vec<String> {
    let mut v: Vec<String> = containers
        .iter()
        .filter(|c| c.label(LABEL_HOST) == Some(host))
        .map(|c| format!("{} {} {:?} {:?}", c.id, c.name, c.state, c.labels))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_force_removed_container_leaves_the_cache_within_a_second() {
    let scope = DockerScope::new().await;
    let host = host_id();
    let mut running = observe(
        harness::docker::docker().await,
        &host,
        Duration::from_secs(3600),
    )
    .await;
    let id = container(
        &scope,
        &format!("berth-test-{}", harness::unique()),
        Some(&host),
        "plain",
    )
    .await;
    wait_for(&running.cache, 5, "the new container, running", |c| {
        c.container(&id)
            .is_some_and(|c| c.state == ContainerState::Running)
    })
    .await;
    let observed = running.cache.container(&id).unwrap();
    assert!(observed.owned_by(&host));
    assert_eq!(observed.state, ContainerState::Running);
    assert!(observed.started_at.is_some());
    let workspace: WorkspaceId = observed.label(LABEL_WORKSPACE).unwrap().parse().unwrap();
    let mut triggered = false;
    while let Ok(t) = running.triggers.try_recv() {
        triggered |= t == Trigger::Workspace(workspace);
    }
    assert!(triggered, "no trigger for the workspace");

    // Timed from the removal's answer: the engine's teardown of a running
    // container (kill, network, unmount) is not the cache's to count.
    remove(&scope.docker, &id).await;
    let t = Instant::now();
    wait_for(&running.cache, 5, "the removal", |c| {
        c.container(&id).is_none()
    })
    .await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the cache learned of the removal after {took:?}"
    );
}

#[tokio::test]
async fn a_cut_event_stream_is_followed_by_a_relist_equal_to_a_fresh_list() {
    let scope = DockerScope::new().await;
    let host = host_id();
    let proxy = SocketProxy::start().await;
    let running = observe(proxy.docker().await, &host, Duration::from_secs(3600)).await;
    let doomed = container(
        &scope,
        &format!("berth-test-{}", harness::unique()),
        Some(&host),
        "plain",
    )
    .await;
    wait_for(&running.cache, 5, "the first container", |c| {
        c.container(&doomed).is_some()
    })
    .await;
    let relists = running.cache.relists();

    // While the stream is down: one container goes, another comes. The
    // cache says it is incomplete until the relist lands.
    proxy.cut();
    wait_for(&running.cache, 5, "incomplete after the cut", |c| {
        !c.is_complete()
    })
    .await;
    remove(&scope.docker, &doomed).await;
    let born = container(
        &scope,
        &format!("berth-test-{}", harness::unique()),
        Some(&host),
        "plain",
    )
    .await;

    wait_for(&running.cache, 10, "a relist after the cut", |c| {
        c.relists() > relists
            && c.is_complete()
            && c.container(&doomed).is_none()
            && c.container(&born).is_some()
    })
    .await;

    let (fresh, _, _) = {
        let (mut observer, cache, _rx) = Observer::new(
            harness::docker::docker().await,
            &host,
            Duration::from_secs(3600),
        );
        observer.relist().await.unwrap();
        cache.snapshot()
    };
    let (cached, _, complete) = running.cache.snapshot();
    assert!(complete);
    assert_eq!(essence(&cached, &host), essence(&fresh, &host));
}

#[tokio::test]
async fn volumes_are_learned_by_the_periodic_relist_and_an_exit_code_is_cached() {
    let scope = DockerScope::new().await;
    let host = host_id();
    let running = observe(
        harness::docker::docker().await,
        &host,
        Duration::from_secs(1),
    )
    .await;
    // Volume events carry no labels: only a relist sees a volume.
    let name = format!("berth-test-vol-{}", harness::unique());
    let mut labels = scope.labels();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_HOST.into(), host.clone());
    scope
        .docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .unwrap();
    let has = |c: &Observed| c.snapshot().1.iter().any(|v| v.name == name);
    wait_for(&running.cache, 5, "the volume, by a relist", has).await;
    let seen = running.cache.snapshot().1;
    let volume = seen.iter().find(|v| v.name == name).unwrap();
    assert!(volume.owned_by(&host));
    scope
        .docker
        .remove_volume(
            &name,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
        .unwrap();
    wait_for(&running.cache, 5, "the volume gone, by a relist", |c| {
        !has(c)
    })
    .await;

    // A container that exits with code 3: state and exit code cached.
    let image = format!("{}/berth-test/agent:plain", harness::env().registry);
    crate::harness::docker::pull(&scope.docker, &image).await;
    let mut labels = scope.labels();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_HOST.into(), host.clone());
    labels.insert(LABEL_WORKSPACE.into(), uuid::Uuid::new_v4().to_string());
    let id = scope
        .run(
            &format!("berth-test-{}", harness::unique()),
            ContainerCreateBody {
                image: Some(image),
                labels: Some(labels),
                env: Some(vec![
                    "AGENT_EXIT_AFTER=0".into(),
                    "AGENT_EXIT_CODE=3".into(),
                ]),
                ..Default::default()
            },
        )
        .await;
    wait_for(&running.cache, 10, "the exit, with its code", |c| {
        c.container(&id)
            .is_some_and(|c| c.state == ContainerState::Exited && c.exit_code == Some(3))
    })
    .await;
    assert!(!running.cache.container(&id).unwrap().oom_killed);
}

#[tokio::test]
async fn health_changes_arrive_through_events() {
    let scope = DockerScope::new().await;
    let host = host_id();
    let running = observe(
        harness::docker::docker().await,
        &host,
        Duration::from_secs(3600),
    )
    .await;
    let relists = running.cache.relists();
    let id = container(
        &scope,
        &format!("berth-test-{}", harness::unique()),
        Some(&host),
        "v1",
    )
    .await;
    wait_for(&running.cache, 15, "healthy", |c| {
        c.container(&id)
            .is_some_and(|c| c.health == Health::Healthy)
    })
    .await;
    assert_eq!(
        running.cache.relists(),
        relists,
        "learned by a relist, not an event"
    );
}

#[tokio::test]
async fn an_unlabelled_ws_container_is_listed_but_not_owned() {
    let scope = DockerScope::new().await;
    let host = host_id();
    let name = format!("ws-{}", &harness::unique()[..12]);
    let id = container(&scope, &name, None, "plain").await;
    let running = observe(
        harness::docker::docker().await,
        &host,
        Duration::from_secs(3600),
    )
    .await;
    let seen = running
        .cache
        .container(&id)
        .expect("listed by its ws- name");
    assert_eq!(seen.name, name);
    assert!(!seen.owned_by(&host));
    let labels: HashMap<_, _> = seen.labels.into_iter().collect();
    assert!(!labels.contains_key(LABEL_MANAGED));
}

#[tokio::test]
async fn a_relist_asked_for_lands_at_once_and_a_lost_stream_is_announced() {
    let host = host_id();
    let proxy = SocketProxy::start().await;
    let mut running = observe(proxy.docker().await, &host, Duration::from_secs(3600)).await;
    // The controller asks when its database session comes back.
    let before = running.cache.relists();
    running.cache.request_relist();
    wait_for(&running.cache, 5, "the relist asked for", |c| {
        c.relists() > before
    })
    .await;

    // A lost stream is announced at once (readiness and the metrics
    // follow), before the relist that follows it.
    while running.triggers.try_recv().is_ok() {}
    proxy.cut();
    let announced = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match running.triggers.recv().await {
                Some(Trigger::All) => return running.cache.is_complete(),
                Some(_) => continue,
                None => panic!("the observer stopped"),
            }
        }
    })
    .await;
    assert_eq!(
        announced.ok(),
        Some(false),
        "the first trigger after the cut comes while the cache is incomplete"
    );
}
