//! /configs is written into the created container as one archive, before
//! it starts; nothing escapes /configs.

use std::collections::BTreeMap;

use berth::act::ActError;
use berth::model::{FilesSpec, Reason, Secret};
use berth::plan::{self, Catalogue};

use super::Fixture;

#[tokio::test]
async fn files_are_in_configs_before_start_with_crlf_stripped_and_the_token_private() {
    let f = Fixture::new().await;
    let template = f.root.path().join("template");
    std::fs::create_dir_all(template.join("bin")).unwrap();
    std::fs::write(template.join("bin/start.py"), "print(1)\r\nprint(2)\r\n").unwrap();
    std::fs::write(template.join("data.csv"), "a,b\r\n1,2\r\n").unwrap();
    std::fs::write(template.join("config.yaml"), "from: template\n").unwrap();
    let mut row = f.row().with_config_files(serde_json::json!({
        "config.yaml": "name: row\r\n",
        "scripts/setup.sh": "#!/bin/sh\r\necho ready\r\n",
        "README.md": "# hi\r\nthere\r\n",
    }));
    row.template_path = Some(template.to_str().unwrap().into());
    row.auth_token = Some(Secret::new("tok-123".into()));
    let spec = f.spec(&row);
    let (id, _) = f.create(&spec).await;

    assert!(
        !f.exec.has_config(&id).await.unwrap(),
        "nothing written yet"
    );
    f.exec.write_files(&id, &spec.files).await.unwrap();
    assert!(f.exec.has_config(&id).await.unwrap());
    let state = f.inspect(&id).await.state.unwrap();
    assert_eq!(state.running, Some(false), "written before start");

    let files: BTreeMap<String, (u32, Vec<u8>)> = f
        .download(&id, "/configs")
        .await
        .into_iter()
        .filter(|(name, ..)| !name.ends_with('/'))
        .map(|(name, mode, content)| (name, (mode, content)))
        .collect();
    let text = |name: &str| String::from_utf8(files[name].1.clone()).unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "configs/.auth_token",
            "configs/README.md",
            "configs/bin/start.py",
            "configs/config.yaml",
            "configs/data.csv",
            "configs/scripts/setup.sh",
        ]
    );
    assert_eq!(text("configs/bin/start.py"), "print(1)\nprint(2)\n");
    assert_eq!(text("configs/scripts/setup.sh"), "#!/bin/sh\necho ready\n");
    assert_eq!(text("configs/README.md"), "# hi\nthere\n");
    assert_eq!(
        text("configs/data.csv"),
        "a,b\r\n1,2\r\n",
        "only scripts and docs"
    );
    assert_eq!(text("configs/config.yaml"), "name: row\r\n", "the row wins");
    assert_eq!(text("configs/.auth_token"), "tok-123");
    assert_eq!(files["configs/.auth_token"].0 & 0o777, 0o600);

    // The same files again change nothing, and the container then starts
    // with them in place.
    f.exec.write_files(&id, &spec.files).await.unwrap();
    f.exec.start(&id).await.unwrap();
    let after = f.download(&id, "/configs/.auth_token").await;
    assert_eq!(after[0].2, b"tok-123");
}

#[tokio::test]
async fn a_t1_container_with_a_read_only_root_gets_its_files_and_starts() {
    let f = Fixture::new().await;
    let mut row = f
        .row()
        .with_tier(1)
        .with_config_files(serde_json::json!({"config.yaml": "tier: 1\n", "sub/x.txt": "x"}));
    row.auth_token = Some(Secret::new("tok-t1".into()));
    let spec = f.spec(&row);
    let (id, _) = f.create(&spec).await;
    let host = f.inspect(&id).await.host_config.unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));

    f.exec.write_files(&id, &spec.files).await.unwrap();
    f.exec.start(&id).await.unwrap();
    let files: BTreeMap<String, Vec<u8>> = f
        .download(&id, "/configs")
        .await
        .into_iter()
        .filter(|(name, ..)| !name.ends_with('/'))
        .map(|(name, _, content)| (name, content))
        .collect();
    assert_eq!(files["configs/config.yaml"], b"tier: 1\n");
    assert_eq!(files["configs/sub/x.txt"], b"x");
    assert_eq!(files["configs/.auth_token"], b"tok-t1");
}

#[tokio::test]
async fn a_path_that_escapes_configs_is_refused_and_nothing_is_written() {
    let f = Fixture::new().await;
    let row = f.row();
    let escaping = row
        .clone()
        .with_config_files(serde_json::json!({"../../etc/passwd": "root::0:0::/:/bin/sh"}));
    let refused = plan::spec(&escaping, &Catalogue::seeded(), &f.settings).unwrap_err();
    assert_eq!(refused.reason, Reason::InvalidSpec);

    let spec = f.spec(&row);
    let (id, _) = f.create(&spec).await;
    let files = FilesSpec {
        files: BTreeMap::from([
            ("config.yaml".to_string(), Secret::new("ok".into())),
            (
                "../../etc/passwd".to_string(),
                Secret::new("root::0:0".into()),
            ),
        ]),
        ..FilesSpec::default()
    };
    let err = f.exec.write_files(&id, &files).await.unwrap_err();
    assert!(matches!(err, ActError::InvalidFiles { .. }), "{err}");
    assert_eq!(err.reason(), Some(Reason::InvalidSpec));
    let configs = f.download(&id, "/configs").await;
    let names: Vec<&str> = configs.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(names, ["configs/"], "not even config.yaml was written");
}

#[tokio::test]
async fn files_without_config_yaml_over_an_empty_configs_volume_are_config_missing() {
    let f = Fixture::new().await;
    let row = f
        .row()
        .with_config_files(serde_json::json!({"notes.md": "hi"}));
    let spec = f.spec(&row);
    let (id, _) = f.create(&spec).await;

    let err = f.exec.write_files(&id, &spec.files).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::ConfigMissing), "{err}");
    let ActError::ConfigMissing { volume, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*volume, row.id.configs_volume());
    let state = f.inspect(&id).await.state.unwrap();
    assert_eq!(state.running, Some(false), "nothing started");

    // A config.yaml the volume already holds (written earlier, or by an
    // operator) is enough: the same files then pass.
    let with_config = FilesSpec {
        files: BTreeMap::from([("config.yaml".to_string(), Secret::new("a: 1".into()))]),
        ..FilesSpec::default()
    };
    f.exec.write_files(&id, &with_config).await.unwrap();
    f.exec.write_files(&id, &spec.files).await.unwrap();
}
