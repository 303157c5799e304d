//! Container shape parity with the Go provisioner (DESIGN §1.3), read back
//! from what the engine made of the executor's create.

use std::collections::HashMap;

use berth::act::ActError;
use berth::model::{
    ContainerSpec, LABEL_HOST, LABEL_IMAGE_DIGEST, LABEL_IMAGE_ID, LABEL_MANAGED, LABEL_SPEC_HASH,
    LABEL_WORKSPACE, WorkspaceAccess,
};
use bollard::models::{ContainerInspectResponse, RestartPolicyNameEnum};

use super::Fixture;

/// What every tier shares: name, labels, env order, restart policy, logs.
fn assert_common(
    spec: &ContainerSpec,
    info: &ContainerInspectResponse,
    image: &berth::act::EnsuredImage,
) {
    assert_eq!(
        info.name.as_deref(),
        Some(format!("/{}", spec.name).as_str())
    );
    let config = info.config.as_ref().unwrap();
    let labels = config.labels.as_ref().unwrap();
    let id = spec.workspace.to_string();
    for (key, value) in [
        (LABEL_MANAGED, "true"),
        (LABEL_WORKSPACE, id.as_str()),
        (LABEL_HOST, super::HOST),
        (LABEL_SPEC_HASH, spec.hash.as_str()),
        (LABEL_IMAGE_ID, image.id.as_str()),
        (LABEL_IMAGE_DIGEST, image.digest.as_ref().unwrap().as_str()),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(info.image.as_deref(), Some(image.id.as_str()));
    let created_from = config.image.as_deref().unwrap();
    assert_eq!(created_from, image.reference);
    let digest = image.digest.as_ref().unwrap();
    assert_eq!(
        created_from,
        format!("{}@{digest}", spec.image),
        "the spec's tag, pinned"
    );

    // The image adds its own ENV; ours keep the spec's order among them.
    let env = config.env.as_ref().unwrap();
    let ours: Vec<String> = spec.material.env.iter().map(|e| e.to_docker()).collect();
    let keys: Vec<&str> = spec.material.env.iter().map(|e| e.key.as_str()).collect();
    let seen: Vec<String> = env
        .iter()
        .filter(|e| keys.contains(&e.split('=').next().unwrap()))
        .cloned()
        .collect();
    assert_eq!(seen, ours);
    assert_eq!(
        &keys[..3],
        ["WORKSPACE_ID", "WORKSPACE_CONFIG_PATH", "PLATFORM_URL"]
    );

    let host = info.host_config.as_ref().unwrap();
    assert_eq!(
        host.restart_policy.as_ref().unwrap().name,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED)
    );
    let log = host.log_config.as_ref().unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let opts = log.config.as_ref().unwrap();
    assert_eq!(opts.get("max-size").map(String::as_str), Some("10m"));
    assert_eq!(opts.get("max-file").map(String::as_str), Some("3"));
    assert_eq!(host.binds.as_ref().unwrap(), &spec.material.binds);
}

/// Published on 127.0.0.1 with an ephemeral port, on the workspace
/// network with the container name as alias.
fn assert_bridge(spec: &ContainerSpec, info: &ContainerInspectResponse, network: &str) {
    let host = info.host_config.as_ref().unwrap();
    assert_eq!(host.network_mode.as_deref(), Some(network));
    let bindings = host.port_bindings.as_ref().unwrap()["8000/tcp"]
        .clone()
        .unwrap();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(bindings[0].host_port.as_deref(), Some(""));
    let networks = info
        .network_settings
        .as_ref()
        .unwrap()
        .networks
        .as_ref()
        .unwrap();
    let aliases = networks[network].aliases.clone().unwrap_or_default();
    assert!(aliases.contains(&spec.name), "aliases {aliases:?}");
}

#[tokio::test]
async fn every_tier_is_created_with_the_go_provisioners_shape() {
    let f = Fixture::new().await;
    let network = f.settings.network.clone();
    // A tier's CPUs are a cap; on a smaller host the cap is the host.
    let ncpu = f.scope.docker.info().await.unwrap().ncpu.unwrap();
    let cpus = |n: i64| n.min(ncpu) * 1_000_000_000;
    for tier in 1..=4 {
        let row = f.row().with_tier(tier);
        let spec = f.spec(&row);
        let (id, image) = f.create(&spec).await;
        let info = f.inspect(&id).await;
        assert_common(&spec, &info, &image);
        let host = info.host_config.clone().unwrap();
        let env = info.config.as_ref().unwrap().env.clone().unwrap();
        assert!(env.contains(&format!("TIER={tier}")), "T{tier}");
        let gib = 1024 * 1024 * 1024;
        match tier {
            1 => {
                assert_eq!(host.readonly_rootfs, Some(true));
                let tmpfs = host.tmpfs.clone().unwrap();
                assert_eq!(tmpfs["/tmp"], "rw,noexec,nosuid,size=64m");
                assert_eq!(host.memory.unwrap_or(0), 0);
                assert_eq!(host.nano_cpus.unwrap_or(0), 0);
                let binds = host.binds.clone().unwrap();
                assert_eq!(binds, [format!("{}:/configs", row.id.configs_volume())]);
                assert_bridge(&spec, &info, &network);
            }
            2 => {
                assert_eq!(host.readonly_rootfs, Some(false));
                assert_eq!(host.memory, Some(gib / 2));
                assert_eq!(host.nano_cpus, Some(cpus(1)));
                assert_eq!(host.privileged, Some(false));
                assert_bridge(&spec, &info, &network);
            }
            3 => {
                assert_eq!(host.privileged, Some(true));
                assert_eq!(host.pid_mode.as_deref(), Some("host"));
                assert_eq!(host.memory, Some(2 * gib));
                assert_eq!(host.nano_cpus, Some(cpus(2)));
                assert_bridge(&spec, &info, &network);
            }
            _ => {
                assert_eq!(host.privileged, Some(true));
                assert_eq!(host.pid_mode.as_deref(), Some("host"));
                assert_eq!(host.network_mode.as_deref(), Some("host"));
                assert_eq!(host.memory, Some(4 * gib));
                assert_eq!(host.nano_cpus, Some(cpus(4)));
                let bindings = host.port_bindings.clone().unwrap_or_default();
                assert!(bindings.values().all(|b| b.is_none()), "{bindings:?}");
                let binds = host.binds.clone().unwrap();
                assert!(binds.contains(&"/var/run/docker.sock:/var/run/docker.sock".into()));
                let url = f.exec.url(&id, &spec).await.unwrap();
                assert_eq!(url.as_deref(), Some("http://127.0.0.1:8000"));
            }
        }
        if tier >= 3 {
            // This sandbox refuses privileged containers at start: the
            // refusal is start_failed with the daemon's words.
            match f.exec.start(&id).await {
                Err(ActError::StartFailed { message, .. }) => {
                    assert!(message.contains("caps"), "{message}")
                }
                other => panic!("T{tier}: expected start_failed, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn each_access_mode_mounts_workspace_as_the_matrix_says() {
    let f = Fixture::new().await;
    let dir = f.root.path().join("project");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.to_str().unwrap().to_string();
    for (access, expected) in [
        (WorkspaceAccess::None, None),
        (
            WorkspaceAccess::ReadOnly,
            Some(format!("{dir}:/workspace:ro")),
        ),
        (
            WorkspaceAccess::ReadWrite,
            Some(format!("{dir}:/workspace")),
        ),
    ] {
        let row = f.row().with_workspace(Some(&dir), access);
        let spec = f.spec(&row);
        let (id, image) = f.create(&spec).await;
        let info = f.inspect(&id).await;
        assert_common(&spec, &info, &image);
        let expected = expected.unwrap_or(format!("{}:/workspace", row.id.workspace_volume()));
        let binds = info.host_config.unwrap().binds.unwrap();
        assert_eq!(
            binds,
            [format!("{}:/configs", row.id.configs_volume()), expected],
            "{access}"
        );
        let workspace_volume = f
            .scope
            .docker
            .inspect_volume(&row.id.workspace_volume())
            .await;
        assert_eq!(workspace_volume.is_ok(), access == WorkspaceAccess::None);
    }
}

#[tokio::test]
async fn only_claude_code_gets_a_session_volume_and_not_in_tier_1() {
    let f = Fixture::new().await;
    for (runtime, tier, sessions) in [
        ("claude-code", 2, true),
        ("langgraph", 2, false),
        ("claude-code", 1, false),
    ] {
        let row = f.row().with_runtime(runtime).with_tier(tier);
        let spec = f.spec(&row);
        let (id, _) = f.create(&spec).await;
        let binds = f.inspect(&id).await.host_config.unwrap().binds.unwrap();
        let mount = format!("{}:/root/.claude/sessions", row.id.sessions_volume());
        assert_eq!(binds.contains(&mount), sessions, "{runtime} T{tier}");
        let volume = f
            .scope
            .docker
            .inspect_volume(&row.id.sessions_volume())
            .await;
        match volume {
            Ok(v) => {
                assert!(sessions, "{runtime} T{tier} has a session volume");
                let ws = row.id.to_string();
                let want = HashMap::from([
                    (LABEL_MANAGED, "true"),
                    (LABEL_WORKSPACE, ws.as_str()),
                    (LABEL_HOST, super::HOST),
                    ("berth.session-epoch", "0"),
                ]);
                for (k, val) in want {
                    assert_eq!(v.labels.get(k).map(String::as_str), Some(val), "{k}");
                }
            }
            Err(_) => assert!(!sessions, "{runtime} T{tier} lacks its session volume"),
        }
    }
}

#[tokio::test]
async fn a_started_workspace_answers_at_its_loopback_url() {
    let f = Fixture::new().await;
    let spec = f.spec(&f.row());
    let (id, _) = f.create(&spec).await;
    assert_eq!(f.exec.url(&id, &spec).await.unwrap(), None, "not started");
    f.exec.start(&id).await.unwrap();
    let url = f.exec.url(&id, &spec).await.unwrap().unwrap();
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // docker-proxy accepts and resets until the agent listens.
            let mut body = String::new();
            let asked = s.write_all(b"GET /variant HTTP/1.0\r\n\r\n").await;
            if asked.is_ok() && s.read_to_string(&mut body).await.is_ok() && body.ends_with("v1\n")
            {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
