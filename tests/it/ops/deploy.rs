//! `deploy/`: the image builds here FROM scratch and runs berth, the
//! compose file is valid and demands an explicit host id, the systemd unit
//! sets one and passes `systemd-analyze verify`.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::docker::{RUN_LABEL, TEST_LABEL};
use crate::harness::{self, DockerScope};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Removes the test's image (by tag) when dropped, pass or fail.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[tokio::test]
async fn the_image_builds_from_scratch_and_runs_berth() {
    let scope = DockerScope::new().await;
    let tag = format!("berth-test-image:{}", harness::unique());
    let image = Image(tag.clone());
    let run_label = format!("{RUN_LABEL}={}", scope.run);
    let test_label = format!("{TEST_LABEL}={}", scope.test);
    let built = tokio::task::spawn_blocking({
        let (tag, run_label, test_label) = (tag.clone(), run_label.clone(), test_label.clone());
        move || {
            run(Command::new(repo().join("deploy/build-image"))
                .args(["--profile", "dev", "-t", &tag])
                .args(["--label", &run_label, "--label", &test_label]))
        }
    })
    .await
    .unwrap();
    assert_eq!(built.0, 0, "build-image failed:\n{}\n{}", built.1, built.2);

    let (code, out, err) = run(Command::new("docker")
        .args(["run", "--rm", "--label", &run_label, "--label", &test_label])
        .args([&tag, "--help"]));
    assert_eq!(code, 0, "berth --help in the image:\n{out}\n{err}");
    assert!(out.contains("Usage: berth") && out.contains("run"), "{out}");

    // The image's own defaults: JSON logs, listener published from inside.
    let (code, out, err) = run(Command::new("docker")
        .args(["run", "--rm", "--label", &run_label, "--label", &test_label])
        .args(["-e", "DATABASE_URL=postgres://berth:image-secret@db/berth"])
        .args([&tag, "config"]));
    assert_eq!(code, 0, "berth config in the image:\n{out}\n{err}");
    assert!(
        out.contains("0.0.0.0:9464") && out.contains("json"),
        "{out}"
    );
    assert!(!out.contains("image-secret"), "{out}");

    let (code, out, _) = run(Command::new("docker").args([
        "image",
        "inspect",
        "-f",
        "{{len .RootFS.Layers}} {{index .Config.Labels \"berth.test-run\"}}",
        &tag,
    ]));
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("1 {}", scope.run),
        "one layer: the binary"
    );
    drop(image);
}

#[test]
fn the_compose_file_is_valid_and_needs_an_explicit_host_id() {
    let file = repo().join("deploy/compose.yaml");
    let compose = |env: &[(&str, &str)]| {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f").arg(&file).arg("config").env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };
    let registry = ("MOLECULE_IMAGE_REGISTRY", "registry.test/org");
    let (code, out, err) = compose(&[
        ("BERTH_HOST_ID", "host-a"),
        ("BERTH_DB_PASSWORD", "pw"),
        registry,
    ]);
    assert_eq!(code, 0, "docker-compose config:\n{out}\n{err}");
    for expected in [
        "BERTH_HOST_ID: host-a",
        "/var/run/docker.sock:/var/run/docker.sock",
        "127.0.0.1:9464:9464",
        "image: postgres:15",
        "condition: service_healthy",
        "MOLECULE_IMAGE_REGISTRY: registry.test/org",
    ] {
        assert!(out.contains(expected), "{expected} missing:\n{out}");
    }
    let (code, _, err) = compose(&[("BERTH_DB_PASSWORD", "pw"), registry]);
    assert_ne!(code, 0);
    assert!(err.contains("BERTH_HOST_ID"), "{err}");
    let (code, _, err) = compose(&[("BERTH_DB_PASSWORD", "pw"), ("BERTH_HOST_ID", "host-a")]);
    assert_ne!(code, 0);
    assert!(err.contains("MOLECULE_IMAGE_REGISTRY"), "{err}");
}

#[test]
fn the_systemd_unit_verifies_and_is_type_notify_with_a_watchdog() {
    let unit = std::fs::read_to_string(repo().join("deploy/berth.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=64 65",
        "SupplementaryGroups=docker",
        "EnvironmentFile=/etc/berth/berth.env",
    ] {
        assert!(unit.contains(line), "{line} missing from the unit");
    }
    // An explicit host id, set before the env file so the file can override
    // it: without one berth would reconcile the rows of host "default".
    let host_id = unit
        .find("\nEnvironment=BERTH_HOST_ID=%H\n")
        .expect("Environment=BERTH_HOST_ID=%H missing from the unit");
    let env_file = unit.find("\nEnvironmentFile=").unwrap();
    assert!(
        host_id < env_file,
        "BERTH_HOST_ID must be set before EnvironmentFile="
    );
    let example = std::fs::read_to_string(repo().join("deploy/berth.env.example")).unwrap();
    assert!(example.lines().any(|l| l.starts_with("BERTH_HOST_ID=")));
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze, installed by scripts/lib.sh");
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let local = unit.replace(
        "ExecStart=/usr/local/bin/berth",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_berth")),
    );
    let path = dir.path().join("berth.service");
    std::fs::write(&path, local).unwrap();
    let (code, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert_eq!(code, 0, "systemd-analyze verify:\n{out}\n{err}");
    assert!(err.trim().is_empty(), "verify warned:\n{err}");
}
