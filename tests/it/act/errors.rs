//! Error classification over real engine answers: what each repeated or
//! impossible action comes back as.

use std::time::Duration;

use berth::act::Executor;
use berth::model::{ImageRef, ImageSource};

use super::{Fixture, kind};

#[tokio::test]
async fn engine_answers_classify_into_the_executors_kinds() {
    let f = Fixture::new().await;
    let exec = &f.exec;
    let second = Duration::from_secs(1);
    let row = f.row();
    let spec = f.spec(&row);
    let (id, image) = f.create(&spec).await;
    let mut seen: Vec<(&str, &str)> = Vec::new();

    seen.push((
        "create again, same spec",
        kind(&exec.create(&spec, &image).await),
    ));
    assert_eq!(
        exec.create(&spec, &image).await.unwrap(),
        id,
        "a retried create"
    );
    let mut changed = spec.clone();
    changed.hash = "v1:other".into();
    seen.push((
        "create, name held by own other spec",
        kind(&exec.create(&changed, &image).await),
    ));
    for v in &spec.volumes {
        seen.push(("ensure volume again", kind(&exec.ensure_volume(v).await)));
    }
    seen.push(("start", kind(&exec.start(&id).await)));
    seen.push(("start again (304)", kind(&exec.start(&id).await)));
    let configs = &spec.volumes[0].name;
    seen.push((
        "remove volume in use (409)",
        kind(&exec.remove_volume(configs).await),
    ));
    seen.push(("stop", kind(&exec.stop(&id, second).await)));
    seen.push(("stop again (304)", kind(&exec.stop(&id, second).await)));
    let prev = row.id.prev_container_name();
    seen.push(("rename", kind(&exec.rename(&id, &prev).await)));
    seen.push((
        "rename to its own name",
        kind(&exec.rename(&id, &prev).await),
    ));
    seen.push(("remove", kind(&exec.remove(&id).await)));
    seen.push(("remove again (404)", kind(&exec.remove(&id).await)));
    seen.push(("start a removed one (404)", kind(&exec.start(&id).await)));
    seen.push((
        "stop a removed one (404)",
        kind(&exec.stop(&id, second).await),
    ));
    seen.push(("remove volume", kind(&exec.remove_volume(configs).await)));
    seen.push((
        "remove volume again (404)",
        kind(&exec.remove_volume(configs).await),
    ));
    let missing = ImageRef::parse(&f.agent(&format!("missing-{}", f.scope.test))).unwrap();
    let tag = ImageSource::Tag;
    seen.push((
        "missing tag (404)",
        kind(&exec.ensure_image(&missing, &tag, None).await),
    ));
    let far = ImageRef::parse("127.0.0.1:1/berth-test/agent:v1").unwrap();
    seen.push((
        "unreachable registry (500)",
        kind(&exec.ensure_image(&far, &tag, None).await),
    ));

    // An absent engine, or one that drops the connection, is transient,
    // never "gone".
    let dropping = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dropping_at = format!("tcp://{}", dropping.local_addr().unwrap());
    let hang_up = tokio::spawn(async move {
        while let Ok((socket, _)) = dropping.accept().await {
            drop(socket);
        }
    });
    for (engine, what) in [
        ("tcp://127.0.0.1:1".to_string(), "no engine"),
        (dropping_at, "dropped connection"),
    ] {
        let docker =
            bollard::Docker::connect_with_http(&engine, 5, bollard::API_DEFAULT_VERSION).unwrap();
        let cut = Executor::new(docker, f.exec_settings());
        seen.push((what, kind(&cut.start(&id).await)));
        seen.push((what, kind(&cut.remove(&id).await)));
    }
    hang_up.abort();

    let expected = [
        ("create again, same spec", "ok"),
        ("create, name held by own other spec", "in_the_way"),
        ("ensure volume again", "ok"),
        ("ensure volume again", "ok"),
        ("start", "ok"),
        ("start again (304)", "ok"),
        ("remove volume in use (409)", "conflict"),
        ("stop", "ok"),
        ("stop again (304)", "ok"),
        ("rename", "ok"),
        ("rename to its own name", "ok"),
        ("remove", "ok"),
        ("remove again (404)", "ok"),
        ("start a removed one (404)", "gone"),
        ("stop a removed one (404)", "gone"),
        ("remove volume", "ok"),
        ("remove volume again (404)", "ok"),
        ("missing tag (404)", "image_not_found"),
        ("unreachable registry (500)", "transient"),
        ("no engine", "transient"),
        ("no engine", "transient"),
        ("dropped connection", "transient"),
        ("dropped connection", "transient"),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_fenced_executor_inspects_but_sends_no_change() {
    let f = Fixture::new().await;
    let exec = &f.exec;
    let spec = f.spec(&f.row());
    let (id, image) = f.create(&spec).await;
    exec.start(&id).await.unwrap();
    let refuse = std::sync::Arc::new(|| false);
    let second = Duration::from_secs(1);
    let prev = f.row().id.prev_container_name();
    let mut changed = spec.clone();
    changed.name = format!("{}-x", spec.name);
    let tried = berth::act::fenced(refuse, async {
        vec![
            ("stop", kind(&exec.stop(&id, second).await)),
            ("rename", kind(&exec.rename(&id, &prev).await)),
            ("remove", kind(&exec.remove(&id).await)),
            ("create", kind(&exec.create(&changed, &image).await)),
            (
                "remove volume",
                kind(&exec.remove_volume(&spec.volumes[0].name).await),
            ),
        ]
    })
    .await;
    for (what, k) in &tried {
        assert_eq!(*k, "lease_lost", "{what}: {tried:?}");
    }
    let c = f.inspect(&id).await;
    assert_eq!(c.state.and_then(|s| s.running), Some(true));
    assert_eq!(c.name.as_deref(), Some(format!("/{}", spec.name).as_str()));
}
