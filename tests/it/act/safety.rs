//! berth never touches what it does not own (DESIGN §2 rule 1), even an
//! object that holds a workspace's name, and never binds a host directory
//! that resolves outside the workspace roots.

use std::time::Duration;

use berth::act::{ActError, Object};
use berth::model::{LABEL_HOST, LABEL_MANAGED, Reason, WorkspaceAccess};
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::ContainerArchiveInfoOptionsBuilder;

use super::{Fixture, kind};

/// Every container action on `id` is refused as a name conflict, and the
/// container is as it was: same name, never started.
async fn assert_untouchable(f: &Fixture, id: &str, name: &str) {
    let spec = f.spec(&f.row());
    let exec = &f.exec;
    let outcomes = [
        ("start", kind(&exec.start(id).await)),
        ("stop", kind(&exec.stop(id, Duration::from_secs(1)).await)),
        (
            "restart",
            kind(&exec.restart(id, Duration::from_secs(1)).await),
        ),
        (
            "rename",
            kind(&exec.rename(id, &format!("{name}-prev")).await),
        ),
        (
            "write_files",
            kind(&exec.write_files(id, &spec.files).await),
        ),
        ("remove", kind(&exec.remove(id).await)),
    ];
    for (action, outcome) in outcomes {
        assert_eq!(outcome, "name_conflict", "{action} on {name}");
    }
    let info = f.inspect(id).await;
    assert_eq!(info.name.as_deref(), Some(format!("/{name}").as_str()));
    assert_eq!(info.state.unwrap().status.unwrap().to_string(), "created");
    let opts = ContainerArchiveInfoOptionsBuilder::new()
        .path("/configs")
        .build();
    let configs = f
        .scope
        .docker
        .get_container_archive_info(id, Some(opts))
        .await;
    assert!(configs.is_err(), "no /configs was written: {configs:?}");
}

#[tokio::test]
async fn an_unlabelled_container_named_like_a_workspace_is_never_mutated() {
    let f = Fixture::new().await;
    let row = f.row();
    let name = row.id.container_name();
    let id = f.foreign_container(&name, &[]).await;

    let spec = f.spec(&row);
    match f.try_create(&spec).await {
        Err(ActError::NameConflict {
            object,
            name: n,
            detail,
        }) => {
            assert_eq!((object, n.as_str()), (Object::Container, name.as_str()));
            assert!(detail.contains(LABEL_MANAGED), "{detail}");
        }
        other => panic!("expected name_conflict, got {other:?}"),
    }
    assert_untouchable(&f, &id, &name).await;
}

#[tokio::test]
async fn a_container_of_another_host_is_never_mutated() {
    let f = Fixture::new().await;
    let row = f.row();
    let name = row.id.container_name();
    let ws = row.id.to_string();
    let labels = [
        (LABEL_MANAGED, "true"),
        (LABEL_HOST, "another-host"),
        ("berth.workspace", ws.as_str()),
    ];
    let id = f.foreign_container(&name, &labels).await;
    let spec = f.spec(&row);
    let err = f.try_create(&spec).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NameConflict), "{err}");
    assert_untouchable(&f, &id, &name).await;
}

#[tokio::test]
async fn a_volume_with_berths_name_but_not_its_labels_is_a_name_conflict_left_alone() {
    let f = Fixture::new().await;
    let row = f.row();
    let spec = f.spec(&row);
    let configs = &spec.volumes[0];
    assert_eq!(configs.name, row.id.configs_volume());
    let mut labels = f.scope.labels();
    labels.insert("owner".into(), "someone-else".into());
    f.scope
        .docker
        .create_volume(VolumeCreateRequest {
            name: Some(configs.name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .unwrap();

    let err = f.exec.ensure_volume(configs).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ActError::NameConflict {
                object: Object::Volume,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.reason(), Some(Reason::NameConflict));
    assert_eq!(
        kind(&f.exec.remove_volume(&configs.name).await),
        "name_conflict"
    );

    let after = f.scope.docker.inspect_volume(&configs.name).await.unwrap();
    assert_eq!(after.labels, labels, "labels as they were");
}

/// A workspace with read-write access can make a symlink in its own host
/// directory; a row naming a path through it passes the planner, whose
/// check reads the path's text, and the executor refuses it.
#[tokio::test]
async fn a_workspace_dir_leading_out_of_the_roots_through_a_symlink_is_never_bound() {
    let f = Fixture::new().await;
    let outside = tempfile::tempdir().unwrap();
    let own = f.root.path().join("a");
    std::fs::create_dir(&own).unwrap();
    let link = own.join("x");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let link = link.to_str().unwrap();
    let row = f
        .row()
        .with_workspace(Some(link), WorkspaceAccess::ReadWrite);
    let spec = f.spec(&row);
    let err = f.try_create(&spec).await.unwrap_err();
    assert!(matches!(err, ActError::InvalidBind { .. }), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::InvalidSpec));
    let text = err.to_string();
    let target = outside.path().canonicalize().unwrap();
    assert!(text.contains(link), "{text}");
    assert!(text.contains(target.to_str().unwrap()), "{text}");
    let made = f.scope.docker.inspect_container(&spec.name, None).await;
    assert!(made.is_err(), "no container was created: {made:?}");

    // Through the op the controller runs, too.
    let mut run = berth::act::Run::default();
    let op = berth::plan::Op::Create(Box::new(spec.clone()));
    let err = f.exec.apply(&op, &mut run).await.unwrap_err();
    assert_eq!(err.kind(), "invalid_spec");
    assert_eq!(run.created, None);

    // A plain directory under the root is bound as before.
    let plain = own.join("plain");
    std::fs::create_dir(&plain).unwrap();
    let plain = plain.to_str().unwrap();
    let row = f
        .row()
        .with_workspace(Some(plain), WorkspaceAccess::ReadWrite);
    let spec = f.spec(&row);
    let (id, _) = f.create(&spec).await;
    let binds = f.inspect(&id).await.host_config.unwrap().binds.unwrap();
    assert!(binds.contains(&format!("{plain}:/workspace")), "{binds:?}");
}

/// Creates network `name` with the scope's labels and berth's for `host`;
/// its id.
async fn network_of(f: &Fixture, name: &str, host: &str) -> String {
    let mut labels = f.scope.labels();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_HOST.into(), host.into());
    f.scope
        .docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.into(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn two_networks_of_one_name_from_racing_berths_end_as_the_one_in_use() {
    let f = Fixture::new().await;
    let name = f.settings.network.clone();
    // Another host's berth made the name's network and runs a container
    // on it; a create of this host raced it and made a second one.
    let theirs = network_of(&f, &name, "another-host").await;
    let body = bollard::models::ContainerCreateBody {
        image: Some(f.agent("v1")),
        labels: Some(f.scope.labels()),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some(theirs.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    f.scope
        .run(&format!("berth-test-net-user-{}", f.scope.test), body)
        .await;
    let ours = network_of(&f, &name, super::HOST).await;
    assert!(
        f.scope
            .docker
            .inspect_network(
                &name,
                None::<bollard::query_parameters::InspectNetworkOptions>
            )
            .await
            .is_err(),
        "the name does not resolve while two networks hold it"
    );
    f.exec.ensure_network(&name).await.unwrap();
    let left = f
        .scope
        .docker
        .inspect_network(
            &name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("the name resolves again");
    assert_eq!(
        left.id.as_deref(),
        Some(theirs.as_str()),
        "the one in use stays"
    );
    let gone = f
        .scope
        .docker
        .inspect_network(
            &ours,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await;
    assert!(gone.is_err(), "this host's duplicate is removed");

    // Another host's duplicate is never removed: berth says so instead.
    let again = network_of(&f, &name, "a-third-host").await;
    let err = f.exec.ensure_network(&name).await.unwrap_err();
    assert!(err.to_string().contains("removes only its own"), "{err}");
    f.scope
        .docker
        .inspect_network(
            &again,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("left alone");
}
