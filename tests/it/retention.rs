//! Image retention on the real engine and a real PostgreSQL: a sweep
//! removes the images berth recorded that nothing uses, keeps the previous
//! stable one, and never touches an image it did not record or one any
//! container uses.
//!
//! The engine refuses to remove an image by id while other repositories
//! name it, and tests share the daemon: so every test here works on copies
//! of the agent images of its own (a label makes their ids unique), pushed
//! to a repository of its own, and removes only those.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth::act::{Executor, ExecutorSettings, Images};
use berth::controller::{Keep, sweep_images};
use berth::desired::{self, Lease, Made, NewImage};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use tokio::sync::watch;

use crate::act::docker_cli;
use crate::controller::World;
use crate::harness::{self, DockerScope, TestDb, docker::pull};

const COPY_LABEL: &str = "berth.test.retention";

/// This test's copies of the agent images in `<registry>/berth-test/<path>`,
/// not in the local store until pulled. Dropping it removes them (by the
/// label only they carry); containers using them must be gone by then.
struct Copies {
    docker: Docker,
    token: String,
    repository: String,
}

impl Copies {
    /// Copies `tags` of the run's agent image into repository
    /// `<registry>/berth-test/ret-<token>/agent`.
    async fn new(docker: &Docker, tags: &[&str]) -> Copies {
        let token = harness::unique();
        let registry = harness::env().registry;
        // Made first, so a failure below still removes what was built.
        let copies = Copies {
            docker: docker.clone(),
            repository: format!("{registry}/berth-test/ret-{token}/agent"),
            token,
        };
        for tag in tags {
            let target = format!("{}:{tag}", copies.repository);
            let dockerfile = format!(
                "FROM {registry}/berth-test/agent:{tag}\nLABEL {COPY_LABEL}={} {COPY_LABEL}.tag={tag}\n",
                copies.token
            );
            build(&dockerfile, &target).await;
            docker_cli(&["push", &target]).await;
        }
        // Out of the local store, so a pull is a pull.
        for tag in tags {
            let by_digest = copies.reference(tag).await;
            docker_cli(&["rmi", &format!("{}:{tag}", copies.repository)]).await;
            let _ = tokio::process::Command::new("docker")
                .args(["rmi", &by_digest])
                .output()
                .await;
        }
        copies
    }

    async fn digest(&self, tag: &str) -> String {
        self.docker
            .inspect_registry_image(&format!("{}:{tag}", self.repository), None)
            .await
            .unwrap()
            .descriptor
            .digest
            .unwrap()
    }

    /// `<repository>@<digest of tag>`.
    async fn reference(&self, tag: &str) -> String {
        format!("{}@{}", self.repository, self.digest(tag).await)
    }

    /// Pulls `tag` by digest; its local image id.
    async fn pull(&self, tag: &str) -> String {
        let reference = self.reference(tag).await;
        pull(&self.docker, &reference).await;
        self.local_id(&reference).await.unwrap()
    }

    async fn local_id(&self, reference: &str) -> Option<String> {
        self.docker.inspect_image(reference).await.ok()?.id
    }
}

impl Drop for Copies {
    fn drop(&mut self) {
        let label = format!("label={COPY_LABEL}={}", self.token);
        let _ = std::thread::spawn(move || {
            let ids = std::process::Command::new("docker")
                .args(["images", "-q", "--no-trunc", "--filter", &label])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: BTreeSet<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rmi", "-f"])
                    .args(ids)
                    .output();
            }
        })
        .join();
    }
}

/// `docker build` of a context-free Dockerfile (test code may use the CLI).
pub(crate) async fn build(dockerfile: &str, tag: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running docker build");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(dockerfile.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host whose lease this test holds, the executor for it, and the lease
/// as the controller's watch channel carries it.
/// Pulls the copies of v1, v2 and plain and records them as berth's; their
/// image ids.
async fn pull_and_record(
    pool: &sqlx::PgPool,
    lease: &Lease,
    copies: &Copies,
) -> (String, String, String) {
    let (v1, v2, plain) = (
        copies.pull("v1").await,
        copies.pull("v2").await,
        copies.pull("plain").await,
    );
    for (tag, id) in [("v1", &v1), ("v2", &v2), ("plain", &plain)] {
        record(pool, lease, copies, tag, id).await;
    }
    (v1, v2, plain)
}

/// Pins agent to `stable`'s copy and marks it stable, then to each of
/// `then` in turn.
async fn pin_after_a_stable(pool: &sqlx::PgPool, copies: &Copies, stable: &str, then: &[&str]) {
    sqlx::query("INSERT INTO runtime_image_pins (template_name, digest) VALUES ('agent', $1)")
        .bind(copies.digest(stable).await)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE runtime_image_pin_history SET stable_at = now()")
        .execute(pool)
        .await
        .unwrap();
    for tag in then {
        sqlx::query("UPDATE runtime_image_pins SET digest = $1 WHERE template_name = 'agent'")
            .bind(copies.digest(tag).await)
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn holder(
    pool: &sqlx::PgPool,
    scope: &mut DockerScope,
) -> (Executor, Lease, watch::Receiver<Option<Lease>>) {
    let host = scope.host();
    sqlx::query("INSERT INTO host_leases (host, holder, epoch) VALUES ($1, 'test', 1)")
        .bind(&host)
        .execute(pool)
        .await
        .unwrap();
    let lease = Lease {
        host: host.clone(),
        holder: "test".into(),
        epoch: 1,
        until: None,
    };
    let settings = ExecutorSettings {
        host_id: host,
        images: Images::Registry {
            prefix: format!("{}/berth-test", harness::env().registry),
        },
        registry_auth: None,
        docker_config: None,
        pull_progress_timeout: Duration::from_secs(30),
        pull_timeout: Duration::from_secs(120),
        network_labels: scope.labels().into_iter().collect(),
        workspace_roots: Vec::new(),
    };
    let executor = Executor::new(scope.docker.clone(), settings);
    let (_tx, rx) = watch::channel(Some(lease.clone()));
    (executor, lease, rx)
}

async fn record(pool: &sqlx::PgPool, lease: &Lease, copies: &Copies, tag: &str, id: &str) {
    let image = NewImage {
        image_id: id.to_string(),
        reference: copies.reference(tag).await,
        runtime: Some("agent".into()),
        digest: Some(copies.digest(tag).await),
        made: Made::Pulled,
    };
    let written = desired::record_image(pool, lease, &image).await.unwrap();
    assert_eq!(written, desired::Written::Yes);
}

/// Starts a container of no berth's (only the scope's labels) from `image`.
async fn run_foreign(scope: &DockerScope, image: &str) {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        labels: Some(scope.labels()),
        ..Default::default()
    };
    scope
        .run(&format!("ret-{}-{}", scope.test, harness::unique()), body)
        .await;
}

/// Marks image `id` as last used an hour ago.
async fn used_an_hour_ago(pool: &sqlx::PgPool, id: &str) {
    sqlx::query(
        "UPDATE host_images SET last_used_at = now() - interval '1 hour' WHERE image_id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

async fn recorded(pool: &sqlx::PgPool, host: &str) -> BTreeSet<String> {
    desired::host_images(pool, host)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.image_id)
        .collect()
}

#[tokio::test]
async fn a_sweep_keeps_the_image_in_use_and_the_previous_stable_and_removes_the_rest() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // Declared before the scope, so its containers go first.
    let copies = Copies::new(&harness::docker::docker().await, &["v1", "v2", "plain"]).await;
    let mut scope = DockerScope::new().await;
    let (executor, lease, rx) = holder(&pool, &mut scope).await;
    let (v1, v2, plain) = pull_and_record(&pool, &lease, &copies).await;
    // v1 rolled out and became stable; then v2 was pinned and runs.
    pin_after_a_stable(&pool, &copies, "v1", &["v2"]).await;
    run_foreign(&scope, &copies.reference("v2").await).await;

    // While a pass makes an image of plain's repository local, its images
    // stay: that pass may not have created its container yet.
    let plain_ref = berth::model::ImageRef::parse(&copies.reference("plain").await).unwrap();
    let busy = BTreeSet::from([berth::act::repository(&plain_ref).to_string()]);
    let held = sweep_images(&pool, &executor, &rx, &busy).await.unwrap();
    assert!(held.removed.is_empty(), "{held:?}");
    assert_eq!(held.kept.get(&plain), Some(&Keep::InFlight));
    assert_eq!(copies.local_id(&plain).await.as_ref(), Some(&plain));

    let swept = sweep_images(&pool, &executor, &rx, &BTreeSet::new())
        .await
        .unwrap();

    let removed: Vec<&str> = swept.removed.iter().map(|r| r.image_id.as_str()).collect();
    assert_eq!(removed, [plain.as_str()]);
    assert_eq!(swept.kept.get(&v2), Some(&Keep::InUse));
    assert_eq!(swept.kept.get(&v1), Some(&Keep::PreviousStable));
    assert_eq!(copies.local_id(&v1).await.as_ref(), Some(&v1));
    assert_eq!(copies.local_id(&v2).await.as_ref(), Some(&v2));
    assert_eq!(copies.local_id(&plain).await, None, "plain is gone");
    assert_eq!(recorded(&pool, &lease.host).await, BTreeSet::from([v1, v2]));

    // A second sweep finds nothing more to do.
    let again = sweep_images(&pool, &executor, &rx, &BTreeSet::new())
        .await
        .unwrap();
    assert!(again.removed.is_empty() && again.failed == 0, "{again:?}");
}

#[tokio::test]
async fn a_sweep_never_removes_an_image_it_did_not_record_or_one_another_container_uses() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // Declared before the scope, so its containers go first.
    let copies = Copies::new(
        &harness::docker::docker().await,
        &["v1", "v2", "plain", "broken"],
    )
    .await;
    let mut scope = DockerScope::new().await;
    let (executor, lease, rx) = holder(&pool, &mut scope).await;
    let (v1, v2, plain, broken) = (
        copies.pull("v1").await,
        copies.pull("v2").await,
        copies.pull("plain").await,
        copies.pull("broken").await,
    );
    // `broken` is pulled but not recorded: not berth's.
    for (tag, id) in [("v1", &v1), ("v2", &v2), ("plain", &plain)] {
        record(&pool, &lease, &copies, tag, id).await;
    }
    // No pin: the runtime follows its moving tag. A container that is not
    // berth's uses v2; of the unused ones, plain was used last.
    run_foreign(&scope, &copies.reference("v2").await).await;
    used_an_hour_ago(&pool, &v1).await;

    // Without the lease, nothing happens.
    let (_tx, none) = watch::channel(None);
    let idle = sweep_images(&pool, &executor, &none, &BTreeSet::new())
        .await
        .unwrap();
    assert!(idle.lost_lease && idle.removed.is_empty());
    assert!(copies.local_id(&v1).await.is_some());

    let swept = sweep_images(&pool, &executor, &rx, &BTreeSet::new())
        .await
        .unwrap();

    let removed: Vec<&str> = swept.removed.iter().map(|r| r.image_id.as_str()).collect();
    assert_eq!(removed, [v1.as_str()]);
    assert_eq!(swept.kept.get(&v2), Some(&Keep::InUse));
    assert_eq!(swept.kept.get(&plain), Some(&Keep::LastUsed));
    assert_eq!(copies.local_id(&v1).await, None);
    assert_eq!(copies.local_id(&v2).await.as_ref(), Some(&v2), "in use");
    assert_eq!(copies.local_id(&plain).await.as_ref(), Some(&plain));
    assert_eq!(
        copies.local_id(&broken).await.as_ref(),
        Some(&broken),
        "not recorded, never removed"
    );
    assert_eq!(
        recorded(&pool, &lease.host).await,
        BTreeSet::from([v2, plain])
    );
}

async fn pin(w: &World, digest: &str) {
    sqlx::query("UPDATE runtime_image_pins SET digest = $1, updated_by = 'test' WHERE template_name = 'agent'")
        .bind(digest)
        .execute(&w.pool)
        .await
        .unwrap();
}

/// Waits until the pin history marks `digest` stable.
async fn wait_stable(w: &World, digest: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stable: Option<bool> = sqlx::query_scalar(
            "SELECT stable_at IS NOT NULL FROM runtime_image_pin_history
              WHERE new_digest = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(digest)
        .fetch_optional(&w.pool)
        .await
        .unwrap();
        if stable == Some(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{digest} not marked stable\n{}",
            w.berth.as_ref().unwrap().tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn after_two_rollouts_the_previous_stable_image_stays_and_the_one_before_goes() {
    // Declared before the world, so its containers go first.
    let copies = Copies::new(&harness::docker::docker().await, &["v1", "v2", "plain"]).await;
    let mut w = World::new().await;
    // The runtime's images are this test's copies.
    let repository = copies
        .repository
        .trim_start_matches(&format!("{}/berth-test/", harness::env().registry))
        .to_string();
    sqlx::query("UPDATE runtimes SET image_repository = $1 WHERE name = 'agent'")
        .bind(&repository)
        .execute(&w.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM runtime_image_pins")
        .execute(&w.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM runtime_image_pin_history")
        .execute(&w.pool)
        .await
        .unwrap();
    let (d1, d2, d3) = (
        copies.digest("v1").await,
        copies.digest("v2").await,
        copies.digest("plain").await,
    );
    sqlx::query("INSERT INTO runtime_image_pins (template_name, digest) VALUES ('agent', $1)")
        .bind(&d1)
        .execute(&w.pool)
        .await
        .unwrap();
    w.start(&[]);
    let id = w.insert(serde_json::json!({})).await;
    let on = |digest: &str| {
        let digest = digest.to_string();
        move |r: &crate::controller::RowView| {
            r.is("online", None)
                && r.converged()
                && r.runtime_image_digest.as_deref() == Some(digest.as_str())
        }
    };
    w.wait_row(id, 90, "online on v1", on(&d1)).await;
    pin(&w, &d2).await;
    w.wait_row(id, 90, "online on v2", on(&d2)).await;
    wait_stable(&w, &d2).await;
    pin(&w, &d3).await;
    w.wait_row(id, 90, "online on plain", on(&d3)).await;

    let id_of = |tag: &'static str| {
        let copies = &copies;
        async move { copies.local_id(&copies.reference(tag).await).await }
    };
    let (v2, v3) = (id_of("v2").await.unwrap(), id_of("plain").await.unwrap());
    // The sweep runs every ten resyncs (3 s here).
    let deadline = Instant::now() + Duration::from_secs(90);
    while id_of("v1").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "v1 was not removed\n{}",
            w.berth.as_ref().unwrap().tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        id_of("v2").await,
        Some(v2.clone()),
        "the previous stable stays"
    );
    assert_eq!(
        id_of("plain").await,
        Some(v3.clone()),
        "the running one stays"
    );
    // The record goes right after the image (the sweep removes, then
    // forgets): looked at until it has gone too.
    let wanted = BTreeSet::from([v2, v3]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded(&w.pool, &w.host).await != wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        recorded(&w.pool, &w.host).await,
        wanted,
        "berth recorded what it pulled and forgot what it removed"
    );
}

#[tokio::test]
async fn a_sweep_keeps_the_digest_pinned_just_before_though_it_never_became_stable() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let copies = Copies::new(&harness::docker::docker().await, &["v1", "v2", "plain"]).await;
    let mut scope = DockerScope::new().await;
    let (executor, lease, rx) = holder(&pool, &mut scope).await;
    let (v1, v2, plain) = pull_and_record(&pool, &lease, &copies).await;
    // plain was stable; v1 was pinned after it and never marked (its
    // rollout did not complete here); v2 is pinned now and runs, its note
    // edited since (which moves no digest).
    pin_after_a_stable(&pool, &copies, "plain", &["v1", "v2"]).await;
    sqlx::query("UPDATE runtime_image_pins SET note = 'looking' WHERE template_name = 'agent'")
        .execute(&pool)
        .await
        .unwrap();
    run_foreign(&scope, &copies.reference("v2").await).await;
    let swept = sweep_images(&pool, &executor, &rx, &BTreeSet::new())
        .await
        .unwrap();
    assert!(swept.removed.is_empty(), "{swept:?}");
    // A halt on another host writes v1 back: it needs no pull.
    assert_eq!(swept.kept.get(&v1), Some(&Keep::PreviousPin));
    assert_eq!(swept.kept.get(&plain), Some(&Keep::PreviousStable));
    assert_eq!(swept.kept.get(&v2), Some(&Keep::InUse));
}

#[tokio::test]
async fn a_sweep_takes_only_its_own_reference_from_an_image_someone_else_tagged() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let copies = Copies::new(&harness::docker::docker().await, &["v1", "v2"]).await;
    let mut scope = DockerScope::new().await;
    let (executor, lease, rx) = holder(&pool, &mut scope).await;
    let (v1, v2) = (copies.pull("v1").await, copies.pull("v2").await);
    for (tag, id) in [("v1", &v1), ("v2", &v2)] {
        record(&pool, &lease, &copies, tag, id).await;
    }
    // No pin: of the unused images, v2 was used last and stays; v1 may go.
    used_an_hour_ago(&pool, &v1).await;
    // Someone tags v1 in the same repository (an image they built or
    // loaded looks so too): the engine would delete it with their tag by
    // id.
    let theirs = format!("{}:theirs", copies.repository);
    docker_cli(&["tag", &copies.reference("v1").await, &theirs]).await;

    let swept = sweep_images(&pool, &executor, &rx, &BTreeSet::new())
        .await
        .unwrap();

    let removed: Vec<&str> = swept.removed.iter().map(|r| r.image_id.as_str()).collect();
    assert_eq!(removed, [v1.as_str()], "berth's part of it is gone");
    assert_eq!(
        copies.local_id(&theirs).await.as_ref(),
        Some(&v1),
        "their image stays"
    );
    assert_eq!(copies.local_id(&copies.reference("v1").await).await, None);
    assert_eq!(recorded(&pool, &lease.host).await, BTreeSet::from([v2]));
}

/// Puts `tag`'s manifest into the registry again with other bytes (the
/// same JSON, compact), under tag `again`: a second digest of the same
/// image (one config, one image id), as a re-pushed or re-indexed tag
/// gives. Returns that digest.
async fn second_digest(copies: &Copies, tag: &str, again: &str) -> String {
    let registry = harness::env().registry;
    let path = copies
        .repository
        .strip_prefix(&format!("{registry}/"))
        .unwrap();
    let url = |t: &str| format!("http://{registry}/v2/{path}/manifests/{t}");
    let kind = "application/vnd.docker.distribution.manifest.v2+json";
    let got = tokio::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Accept: {kind}"), &url(tag)])
        .output()
        .await
        .unwrap();
    assert!(got.status.success(), "fetching the manifest of {tag}");
    let manifest: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let compact = serde_json::to_string(&manifest).unwrap();
    assert_ne!(compact.as_bytes(), &got.stdout[..], "other bytes");
    let put = tokio::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H", &format!("Content-Type: {kind}")])
        .args(["--data-binary", &compact, &url(again)])
        .output()
        .await
        .unwrap();
    assert!(put.status.success(), "putting the manifest again");
    copies.digest(again).await
}

#[tokio::test]
async fn an_image_berth_pulled_by_two_digests_goes_whole() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let copies = Copies::new(&harness::docker::docker().await, &["v1", "v2"]).await;
    let mut scope = DockerScope::new().await;
    let (executor, lease, rx) = holder(&pool, &mut scope).await;
    let (v1, v2) = (copies.pull("v1").await, copies.pull("v2").await);
    // berth pulled v1 by its first digest, then by a second one (its pin
    // moved between the two): one image, recorded by the last pull.
    let again = second_digest(&copies, "v1", "v1-again").await;
    let by_again = format!("{}@{again}", copies.repository);
    pull(&copies.docker, &by_again).await;
    assert_eq!(copies.local_id(&by_again).await.as_ref(), Some(&v1));
    record(&pool, &lease, &copies, "v1-again", &v1).await;
    record(&pool, &lease, &copies, "v2", &v2).await;
    used_an_hour_ago(&pool, &v1).await;

    let swept = sweep_images(&pool, &executor, &rx, &BTreeSet::new())
        .await
        .unwrap();

    let removed: Vec<&str> = swept.removed.iter().map(|r| r.image_id.as_str()).collect();
    assert_eq!(removed, [v1.as_str()]);
    assert_eq!(
        copies.local_id(&v1).await,
        None,
        "no digest of berth's keeps it"
    );
    assert_eq!(recorded(&pool, &lease.host).await, BTreeSet::from([v2]));
}
