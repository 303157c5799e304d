//! The container spec against the Go provisioner's behaviour. Every
//! expected value is written out by hand from what `buildContainerEnv`,
//! `buildWorkspaceMount`, `ApplyTierConfig` and `Start` produce for the
//! same input (row env in sorted order: Go appends it in map order, and
//! Docker keeps the last of duplicate keys, which the in-place
//! replacement reproduces).

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::model::{
    Digest, ImageSource, LABEL_IMAGE_DIGEST, LABEL_RESTART_EPOCH, LABEL_SPEC_HASH, Platform, Tier,
    WorkspaceAccess,
};

const ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn parity_row() -> WorkspaceRow {
    WorkspaceRow::test(ID.parse().expect("uuid"), t0())
}

fn env_of(spec: &ContainerSpec) -> Vec<String> {
    spec.material.env.iter().map(|e| e.to_docker()).collect()
}

fn strs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_standard_row_gets_the_go_env_binds_and_t2_limits() {
    let row = parity_row().with_env(json!({"OPENAI_API_KEY": "sk-1", "A_VAR": "x"}));
    let s = built(&row, &Settings::test());
    assert_eq!(
        env_of(&s),
        strs(&[
            "WORKSPACE_ID=0f8fad5b-d9cb-469f-a165-70867728950e",
            "WORKSPACE_CONFIG_PATH=/configs",
            "PLATFORM_URL=http://platform:8080",
            "MOLECULE_URL=http://platform:8080",
            "TIER=2",
            "PLUGINS_DIR=/plugins",
            "PYTHONPATH=/app",
            "A_VAR=x",
            "OPENAI_API_KEY=sk-1",
        ])
    );
    assert_eq!(
        s.material.binds,
        strs(&[
            "ws-0f8fad5b-d9c-configs:/configs",
            "ws-0f8fad5b-d9cb-469f-a165-70867728950e-workspace:/workspace",
        ])
    );
    assert!(s.material.tmpfs.is_empty());
    assert!(!s.material.readonly_rootfs);
    assert_eq!(s.material.memory, 536_870_912);
    assert_eq!(s.material.nano_cpus, 1_000_000_000);
    assert!(!s.material.privileged);
    assert_eq!(s.material.pid_mode, "");
    assert_eq!(s.material.network_mode, "molecule-monorepo-net");
    assert_eq!(s.material.network_aliases, strs(&["ws-0f8fad5b-d9c"]));
    assert_eq!(s.material.ports, strs(&["127.0.0.1::8000/tcp"]));
    assert_eq!(s.exposed_ports, strs(&["8000/tcp"]));
    assert_eq!(s.name, "ws-0f8fad5b-d9c");
    assert_eq!(s.restart_policy, "unless-stopped");
    assert_eq!(s.log_driver, "json-file");
    assert_eq!(s.log_opts.get("max-size").map(String::as_str), Some("10m"));
    assert_eq!(s.log_opts.get("max-file").map(String::as_str), Some("3"));
    assert_eq!(
        s.image.as_str(),
        "registry.test/ws/workspace-template-langgraph:latest"
    );
    assert_eq!(s.image_source, ImageSource::Tag);
}

#[test]
fn a_claude_code_t3_row_with_read_only_dir_and_awareness_matches_go() {
    let row = parity_row()
        .with_runtime("claude-code")
        .with_tier(3)
        .with_awareness("http://aw:9000", "team-a")
        .with_workspace(Some("/srv/workspaces/proj"), WorkspaceAccess::ReadOnly);
    let s = built(&row, &Settings::test());
    assert_eq!(
        env_of(&s),
        strs(&[
            "WORKSPACE_ID=0f8fad5b-d9cb-469f-a165-70867728950e",
            "WORKSPACE_CONFIG_PATH=/configs",
            "PLATFORM_URL=http://platform:8080",
            "MOLECULE_URL=http://platform:8080",
            "TIER=3",
            "PLUGINS_DIR=/plugins",
            "PYTHONPATH=/app",
            "AWARENESS_NAMESPACE=team-a",
            "AWARENESS_URL=http://aw:9000",
        ])
    );
    assert_eq!(
        s.material.binds,
        strs(&[
            "ws-0f8fad5b-d9c-configs:/configs",
            "/srv/workspaces/proj:/workspace:ro",
            "ws-0f8fad5b-d9c-claude-sessions:/root/.claude/sessions",
        ])
    );
    assert_eq!(s.material.memory, 2_147_483_648);
    assert_eq!(s.material.nano_cpus, 2_000_000_000);
    assert!(s.material.privileged);
    assert_eq!(s.material.pid_mode, "host");
    assert_eq!(s.material.network_mode, "molecule-monorepo-net");
    assert!(!s.material.readonly_rootfs);
}

#[test]
fn a_t1_row_keeps_only_configs_with_a_read_only_rootfs_and_tmpfs() {
    let row = parity_row()
        .with_runtime("claude-code")
        .with_tier(1)
        .with_workspace(Some("/srv/workspaces/proj"), WorkspaceAccess::ReadWrite);
    let s = built(&row, &Settings::test());
    assert_eq!(
        s.material.binds,
        strs(&["ws-0f8fad5b-d9c-configs:/configs"])
    );
    assert_eq!(
        s.material.tmpfs,
        BTreeMap::from([("/tmp".to_string(), "rw,noexec,nosuid,size=64m".to_string())])
    );
    assert!(s.material.readonly_rootfs);
    assert_eq!((s.material.memory, s.material.nano_cpus), (0, 0));
    assert!(!s.material.privileged);
    assert_eq!(s.material.pid_mode, "");
    assert!(env_of(&s).contains(&"TIER=1".to_string()));
    assert_eq!(s.volumes.len(), 1, "no session or workspace volume in T1");
}

#[test]
fn an_allowed_t4_row_gets_host_network_docker_socket_and_no_ports() {
    let settings = Settings {
        allow_host_root_tier: true,
        ..Settings::test()
    };
    let row = parity_row()
        .with_tier(4)
        .with_workspace(Some("/srv/workspaces/x"), WorkspaceAccess::ReadWrite);
    let s = built(&row, &settings);
    assert_eq!(
        s.material.binds,
        strs(&[
            "ws-0f8fad5b-d9c-configs:/configs",
            "/srv/workspaces/x:/workspace",
            "/var/run/docker.sock:/var/run/docker.sock",
        ])
    );
    assert_eq!(s.material.network_mode, "host");
    assert!(s.material.network_aliases.is_empty());
    assert!(s.material.ports.is_empty() && s.exposed_ports.is_empty());
    assert!(s.material.privileged);
    assert_eq!(s.material.pid_mode, "host");
    assert_eq!(s.material.memory, 4_294_967_296);
    assert_eq!(s.material.nano_cpus, 4_000_000_000);
    assert_eq!(s.fixed_url.as_deref(), Some("http://127.0.0.1:8000"));
}

#[test]
fn tier_zero_and_unknown_tiers_get_t2_limits_but_keep_their_tier_in_env() {
    for tier in [0, 7, -1] {
        let s = built(&parity_row().with_tier(tier), &Settings::test());
        assert_eq!(s.tier, Tier::T2);
        assert_eq!(s.material.memory, 536_870_912);
        assert_eq!(s.material.nano_cpus, 1_000_000_000);
        assert!(env_of(&s).contains(&format!("TIER={tier}")));
    }
}

#[test]
fn tier_overrides_set_memory_and_nano_cpus_from_shares() {
    let mut settings = Settings::test();
    settings.tiers.memory_mb[1] = Some(1024);
    settings.tiers.cpu_shares[1] = Some(512);
    settings.tiers.cpu_shares[2] = Some(3072);
    let s = built(&parity_row(), &settings);
    assert_eq!(s.material.memory, 1_073_741_824);
    assert_eq!(s.material.nano_cpus, 500_000_000);
    let t3 = built(&parity_row().with_tier(3), &settings);
    assert_eq!(t3.material.memory, 2_147_483_648);
    assert_eq!(t3.material.nano_cpus, 3_000_000_000);
}

#[test]
fn a_row_key_equal_to_a_default_replaces_it_in_place() {
    let row = parity_row().with_env(json!({"PYTHONPATH": "/opt/x", "Z": "1", "B": "2"}));
    let s = built(&row, &Settings::test());
    let env = env_of(&s);
    assert_eq!(env[6], "PYTHONPATH=/opt/x");
    assert_eq!(env[7..], strs(&["B=2", "Z=1"]));
    assert_eq!(
        env.iter().filter(|e| e.starts_with("PYTHONPATH=")).count(),
        1
    );
}

#[test]
fn awareness_needs_both_url_and_namespace() {
    let mut row = parity_row();
    row.awareness_url = Some("http://aw".into());
    let env = env_of(&built(&row, &Settings::test()));
    assert!(!env.iter().any(|e| e.starts_with("AWARENESS")));
}

#[test]
fn read_write_access_mounts_the_dir_and_none_ignores_it() {
    let rw = parity_row().with_workspace(Some("/srv/workspaces/a"), WorkspaceAccess::ReadWrite);
    assert_eq!(
        built(&rw, &Settings::test()).material.binds[1],
        "/srv/workspaces/a:/workspace"
    );
    let none = parity_row().with_workspace(Some("/srv/workspaces/a"), WorkspaceAccess::None);
    assert_eq!(
        built(&none, &Settings::test()).material.binds[1],
        "ws-0f8fad5b-d9cb-469f-a165-70867728950e-workspace:/workspace"
    );
}

#[test]
fn labels_name_owner_workspace_host_hash_and_restart_epoch() {
    let mut row = parity_row();
    row.restart_epoch = 4;
    let s = built(&row, &Settings::test());
    assert_eq!(
        s.labels.get(LABEL_MANAGED).map(String::as_str),
        Some("true")
    );
    assert_eq!(s.labels.get(LABEL_WORKSPACE).map(String::as_str), Some(ID));
    assert_eq!(
        s.labels.get(LABEL_HOST).map(String::as_str),
        Some("default")
    );
    assert_eq!(s.labels.get(LABEL_SPEC_HASH), Some(&s.hash));
    assert!(s.hash.starts_with("v1:"));
    assert_eq!(
        s.labels.get(LABEL_RESTART_EPOCH).map(String::as_str),
        Some("4")
    );
    for v in &s.volumes {
        assert_eq!(v.labels.get(LABEL_WORKSPACE).map(String::as_str), Some(ID));
    }
}

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).expect("digest")
}

#[test]
fn images_follow_explicit_then_ring_pin_then_stable_pin_then_tag() {
    let settings = Settings::test();
    let mut cat = Catalogue::seeded();
    let mut canary = parity_row();
    canary.ring = "canary".into();
    let tag = spec(&canary, &cat, &settings).expect("spec");
    assert_eq!(
        tag.image.as_str(),
        "registry.test/ws/workspace-template-langgraph:latest"
    );

    cat.set_pin("langgraph", "stable", digest('a'));
    let stable = spec(&canary, &cat, &settings).expect("spec");
    assert_eq!(
        stable.image.to_string(),
        format!(
            "registry.test/ws/workspace-template-langgraph@{}",
            digest('a')
        )
    );
    assert_eq!(
        stable.image_source,
        ImageSource::Pinned {
            ring: "stable".into()
        }
    );
    assert_eq!(
        stable.labels.get(LABEL_IMAGE_DIGEST),
        Some(&digest('a').to_string())
    );

    cat.set_pin("langgraph", "canary", digest('b'));
    let ring = spec(&canary, &cat, &settings).expect("spec");
    assert_eq!(ring.image.digest(), Some(&digest('b')));

    let explicit = spec(&canary.clone().with_image("my.reg/own:v2"), &cat, &settings);
    assert_eq!(explicit.expect("spec").image.as_str(), "my.reg/own:v2");

    let local = Settings {
        local_override: true,
        ..settings.clone()
    };
    let over = spec(&canary, &cat, &local).expect("spec");
    assert_eq!(
        over.image.as_str(),
        "registry.test/ws/workspace-template-langgraph:latest"
    );
    assert_eq!(over.image_source, ImageSource::LocalOnly);
}

#[test]
fn local_build_mode_uses_the_molecule_local_placeholder() {
    let settings = Settings {
        registry_prefix: None,
        platform: Some(Platform("linux/amd64".into())),
        ..Settings::test()
    };
    let s = built(&parity_row().with_runtime("codex"), &settings);
    assert_eq!(
        s.image.as_str(),
        "molecule-local/workspace-template-codex:latest"
    );
    assert_eq!(
        s.image_source,
        ImageSource::LocalBuild {
            runtime: "codex".into()
        }
    );
    assert_eq!(s.platform, Some(Platform("linux/amd64".into())));
}

#[test]
fn in_local_build_mode_a_pin_wins_only_where_the_catalogue_names_its_registry() {
    let settings = Settings {
        registry_prefix: None,
        ..Settings::test()
    };
    let row = parity_row().with_runtime("codex");
    // The seeded repository names no registry: a fleet-wide pin meant for
    // registry hosts leaves this host on its local build.
    let mut cat = Catalogue::seeded();
    cat.set_pin("codex", "stable", digest('c'));
    let local = spec(&row, &cat, &settings).expect("spec");
    assert!(matches!(local.image_source, ImageSource::LocalBuild { .. }));

    for (repository, wins) in [
        ("registry.example.com/team/workspace-template-codex", true),
        ("localhost/workspace-template-codex", true),
        ("team/workspace-template-codex", false),
        ("workspace-template-codex", false),
    ] {
        let mut codex = crate::model::RuntimeRow::new("codex");
        codex.image_repository = repository.into();
        let mut cat = Catalogue::new([codex], []);
        cat.set_pin("codex", "stable", digest('c'));
        let s = spec(&row, &cat, &settings).expect("spec");
        if wins {
            assert_eq!(
                s.image.to_string(),
                format!("{repository}@{}", digest('c')),
                "{repository}"
            );
            assert_eq!(
                s.image_source,
                ImageSource::Pinned {
                    ring: "stable".into()
                }
            );
        } else {
            assert!(
                matches!(s.image_source, ImageSource::LocalBuild { .. }),
                "{repository}: {:?}",
                s.image_source
            );
        }
        // WORKSPACE_IMAGE_LOCAL_OVERRIDE ignores pins: the local build's
        // tag as found, never pulled nor built.
        let over = Settings {
            local_override: true,
            ..settings.clone()
        };
        let s = spec(&row, &cat, &over).expect("spec");
        assert_eq!(
            s.image.as_str(),
            "molecule-local/workspace-template-codex:latest"
        );
        assert_eq!(s.image_source, ImageSource::LocalOnly);
    }
}

#[test]
fn config_files_lose_crlf_only_in_scripts_and_docs() {
    let row = parity_row().with_config_files(json!({
        "run.sh": "a\r\nb", "x.py": "c\r\n", "doc.md": "d\r\n", "config.yaml": "e\r\n"
    }));
    let s = built(&row, &Settings::test());
    let f = |k: &str| s.files.files.get(k).map(|v| v.expose().clone());
    assert_eq!(f("run.sh").as_deref(), Some("a\nb"));
    assert_eq!(f("x.py").as_deref(), Some("c\n"));
    assert_eq!(f("doc.md").as_deref(), Some("d\n"));
    assert_eq!(f("config.yaml").as_deref(), Some("e\r\n"));
}

#[test]
fn a_spec_never_shows_env_values_or_files_in_debug_output() {
    let mut row = parity_row()
        .with_env(json!({"TOKEN": "sk-live-123"}))
        .with_config_files(json!({"config.yaml": "password: pw-456"}));
    row.auth_token = Some(crate::model::Secret::new("tok-789".into()));
    let shown = format!("{:?}", built(&row, &Settings::test()));
    for secret in ["sk-live-123", "pw-456", "tok-789"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
}
