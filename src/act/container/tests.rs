//! The create body, checked without an engine.

use super::*;
use crate::model::{Digest, WorkspaceId, WorkspaceRow};
use crate::plan::{self, Catalogue, Settings};

fn spec(tier: i32) -> ContainerSpec {
    let id: WorkspaceId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let d = format!("sha256:{}", "d".repeat(64));
    let row = WorkspaceRow::test(id, chrono::DateTime::UNIX_EPOCH)
        .with_tier(tier)
        .with_image(&format!("reg.test/agent@{d}"));
    let mut settings = Settings::test();
    settings.allow_host_root_tier = true;
    plan::spec(&row, &Catalogue::seeded(), &settings).unwrap()
}

fn image(digest: Option<Digest>) -> EnsuredImage {
    EnsuredImage {
        reference: "reg.test/agent@sha256:x".into(),
        digest,
        id: "sha256:img".into(),
        pulled: false,
    }
}

#[test]
fn the_body_carries_the_image_it_was_made_from_and_the_loopback_port() {
    let spec = spec(2);
    let digest = spec.image.digest().cloned();
    let body = container_body(&spec, &image(digest.clone()));
    let labels = body.labels.unwrap();
    assert_eq!(labels[LABEL_IMAGE_ID], "sha256:img");
    assert_eq!(labels[LABEL_IMAGE_DIGEST], digest.unwrap().as_str());
    assert_eq!(body.image.as_deref(), Some("reg.test/agent@sha256:x"));
    let host = body.host_config.unwrap();
    let binding = &host.port_bindings.unwrap()["8000/tcp"].clone().unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(binding.host_port.as_deref(), Some(""));
    let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
    let aliases = endpoints["molecule-monorepo-net"].aliases.clone().unwrap();
    assert_eq!(aliases, std::slice::from_ref(&spec.name));

    // A local image has no digest: no stale digest label survives.
    let labels = container_body(&spec, &image(None)).labels.unwrap();
    assert!(!labels.contains_key(LABEL_IMAGE_DIGEST));
}

#[test]
fn host_network_publishes_nothing_and_joins_no_network_by_alias() {
    let body = container_body(&spec(4), &image(None));
    let host = body.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(host.port_bindings, None);
    assert_eq!(body.networking_config, None);
    assert_eq!(body.exposed_ports, None);
}
