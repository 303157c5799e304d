//! The harness's Docker side: the local registry, the test agent image, and
//! a cleanup that removes exactly a test's objects.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::InspectContainerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{self, DockerScope};

/// The digest of a test image in the local registry, asked of the registry
/// through the engine (distribution inspect).
async fn registry_digest(docker: &Docker, reference: &str) -> String {
    let info = docker
        .inspect_registry_image(reference, None)
        .await
        .unwrap();
    info.descriptor
        .digest
        .expect("a digest from distribution inspect")
}

/// GET `path` from 127.0.0.1:`port`; the body, or None while nothing answers.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

async fn run_agent(scope: &DockerScope, image: &str, name: &str) -> String {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        labels: Some(scope.labels()),
        exposed_ports: Some(vec!["8000/tcp".to_string()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                "8000/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    scope.run(name, body).await
}

async fn host_port(docker: &Docker, id: &str) -> u16 {
    let info = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let ports = info.network_settings.unwrap().ports.unwrap();
    let binding = ports["8000/tcp"].as_ref().unwrap()[0].clone();
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    binding.host_port.unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_test_agent_pulled_by_digest_answers_on_its_loopback_port() {
    let env = harness::env();
    let scope = DockerScope::new().await;
    let repository = format!("{}/berth-test/agent", env.registry);
    let digest = registry_digest(&scope.docker, &format!("{repository}:v1")).await;
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let other = registry_digest(&scope.docker, &format!("{repository}:v2")).await;
    assert_ne!(
        digest, other,
        "v1 and v2 must differ so promotions can be tested"
    );

    let by_digest = format!("{repository}@{digest}");
    crate::harness::docker::pull(&scope.docker, &by_digest).await;
    let id = run_agent(&scope, &by_digest, &format!("berth-test-{}", scope.test)).await;
    let port = host_port(&scope.docker, &id).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Some(body) = http_get(port, "/variant").await {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not answer on 127.0.0.1:{port}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body.trim(), "v1");
}

#[tokio::test]
async fn a_missing_tag_is_a_404_from_distribution_inspect() {
    let env = harness::env();
    let docker = harness::docker::docker().await;
    let reference = format!("{}/berth-test/agent:no-such-tag", env.registry);
    match docker.inspect_registry_image(&reference, None).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) => {
            assert_eq!(status_code, 404)
        }
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[tokio::test]
async fn cleanup_removes_exactly_the_scopes_objects() {
    let env = harness::env();
    let image = format!("{}/berth-test/agent:plain", env.registry);
    crate::harness::docker::pull(&harness::docker::docker().await, &image).await;
    let ours = DockerScope::new().await;
    let theirs = DockerScope::new().await;

    let a = run_agent(&ours, &image, &format!("berth-test-a-{}", ours.test)).await;
    let b = run_agent(&ours, &image, &format!("berth-test-b-{}", ours.test)).await;
    let volume = bollard::models::VolumeCreateRequest {
        name: Some(format!("berth-test-{}", ours.test)),
        labels: Some(ours.labels()),
        ..Default::default()
    };
    let volume = ours.docker.create_volume(volume).await.unwrap().name;
    let other = run_agent(&theirs, &image, &format!("berth-test-c-{}", theirs.test)).await;

    let removed = ours.cleanup().await;
    let mut containers = removed.containers.clone();
    containers.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(containers, expected);
    assert_eq!(removed.volumes, [volume]);

    // The other scope's container is untouched, and still running.
    let info = theirs
        .docker
        .inspect_container(&other, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(info.state.unwrap().running, Some(true));
    assert_eq!(theirs.cleanup().await.containers, [other]);
}

/// Creates and starts an agent with the given env; returns its id.
async fn agent_with_env(scope: &DockerScope, tag: &str, env: &[&str]) -> String {
    let image = format!("{}/berth-test/agent:{tag}", harness::env().registry);
    crate::harness::docker::pull(&scope.docker, &image).await;
    let body = ContainerCreateBody {
        image: Some(image),
        env: Some(env.iter().map(|e| e.to_string()).collect()),
        labels: Some(scope.labels()),
        ..Default::default()
    };
    let name = format!("berth-test-{}-{}", scope.test, harness::unique());
    scope.run(&name, body).await
}

async fn state(docker: &Docker, id: &str) -> bollard::models::ContainerState {
    let info = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    info.state.unwrap()
}

fn health(s: &bollard::models::ContainerState) -> String {
    s.health
        .as_ref()
        .and_then(|h| h.status)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Polls until `done` holds for the container's state, or panics after
/// `secs` seconds.
async fn wait_state(
    docker: &Docker,
    id: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&bollard::models::ContainerState) -> bool,
) -> bollard::models::ContainerState {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = state(docker, id).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached in {secs}s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_agent_becomes_healthy_and_one_that_is_slow_only_later() {
    let scope = DockerScope::new().await;
    let quick = agent_with_env(&scope, "v1", &[]).await;
    let slow = agent_with_env(&scope, "v1", &["AGENT_READY_AFTER=4"]).await;
    let started = Instant::now();
    wait_state(&scope.docker, &quick, 15, "healthy", |s| {
        health(s) == "healthy"
    })
    .await;
    assert_ne!(health(&state(&scope.docker, &slow).await), "healthy");
    wait_state(&scope.docker, &slow, 20, "slow healthy", |s| {
        health(s) == "healthy"
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(4));
}

#[tokio::test]
async fn an_agent_told_never_to_be_ready_turns_unhealthy() {
    let scope = DockerScope::new().await;
    let id = agent_with_env(&scope, "v1", &["AGENT_NEVER_READY=1"]).await;
    let s = wait_state(&scope.docker, &id, 15, "unhealthy", |s| {
        health(s) == "unhealthy"
    })
    .await;
    assert_eq!(s.running, Some(true));
}

#[tokio::test]
async fn an_agent_exits_with_the_chosen_code_after_the_chosen_time() {
    let scope = DockerScope::new().await;
    let id = agent_with_env(
        &scope,
        "plain",
        &["AGENT_EXIT_AFTER=1", "AGENT_EXIT_CODE=3"],
    )
    .await;
    let s = wait_state(&scope.docker, &id, 15, "exited", |s| {
        s.running == Some(false)
    })
    .await;
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(health(&s), "", "the plain image has no healthcheck");
}

#[tokio::test]
async fn an_agent_ignoring_sigterm_is_killed_at_the_stop_timeout() {
    let scope = DockerScope::new().await;
    let polite = agent_with_env(&scope, "plain", &[]).await;
    let stubborn = agent_with_env(&scope, "plain", &["AGENT_IGNORE_TERM=1"]).await;
    // Each agent sets its TERM trap before it starts its server: once the
    // server runs, a TERM meets the trap (a shell as PID 1 without one
    // ignores it, and the polite agent would be killed too).
    for id in [&polite, &stubborn] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let top = scope
                .docker
                .top_processes(id, None::<bollard::query_parameters::TopOptions>)
                .await
                .unwrap();
            let serving = top
                .processes
                .unwrap_or_default()
                .iter()
                .any(|p| p.iter().any(|field| field.contains("httpd")));
            if serving {
                break;
            }
            assert!(Instant::now() < deadline, "the agent never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stop = |id: String| {
        let docker = scope.docker.clone();
        async move {
            let t = Instant::now();
            let opts = bollard::query_parameters::StopContainerOptionsBuilder::new()
                .t(2)
                .build();
            docker.stop_container(&id, Some(opts)).await.unwrap();
            t.elapsed()
        }
    };
    let (polite_took, stubborn_took) = tokio::join!(stop(polite.clone()), stop(stubborn.clone()));
    // The polite one left on the TERM (exit 0, not the KILL's 137), before
    // the stop timeout; the stubborn one was killed at it.
    assert_eq!(state(&scope.docker, &polite).await.exit_code, Some(0));
    assert!(
        polite_took < stubborn_took,
        "{polite_took:?} {stubborn_took:?}"
    );
    assert!(stubborn_took >= Duration::from_secs(2), "{stubborn_took:?}");
    assert_eq!(state(&scope.docker, &stubborn).await.exit_code, Some(137));
}
