//! Local-build mode on the real engine, from git repositories the tests
//! make: `git init` in a temporary directory, a `FROM scratch` Dockerfile
//! that copies Debian's static busybox from the build context. Built images
//! carry the run's label (from the Dockerfile) and are removed by the
//! [`Templates`] guard, after the test's containers.

mod controller;
mod executor;
mod secrets;
mod slots;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};

use berth::model::WorkspaceId;

use crate::controller::World;
use crate::harness::{self, docker::RUN_LABEL};

/// A workspace image that runs until SIGTERM.
pub fn good_dockerfile() -> String {
    let run = harness::env().run_id;
    format!(
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         COPY version /version\n\
         LABEL {RUN_LABEL}={run}\n\
         ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do /bin/busybox sleep 1 & wait $!; done\"]\n"
    )
}

/// [`good_dockerfile`] with a build step that takes `secs` seconds.
pub fn slow_dockerfile(secs: u32) -> String {
    format!(
        "{}RUN [\"/bin/busybox\", \"sleep\", \"{secs}\"]\n",
        good_dockerfile()
    )
}

/// A Dockerfile whose build step fails after printing a cause.
pub fn broken_dockerfile() -> String {
    let run = harness::env().run_id;
    format!(
        "FROM scratch\n\
         LABEL {RUN_LABEL}={run}\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo compiling the agent; echo missing dependency libfoo; exit 3\"]\n"
    )
}

/// Template repositories `<dir>/tpl-<runtime>`, and the images built from
/// them, removed on drop.
pub struct Templates {
    pub dir: tempfile::TempDir,
    /// `MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX` for them.
    pub prefix: String,
    /// A cache dir for berth, inside `dir`.
    pub cache: PathBuf,
    runtimes: Vec<String>,
}

impl Templates {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("{}/tpl-", dir.path().display());
        let cache = dir.path().join("cache");
        Templates {
            dir,
            prefix,
            cache,
            runtimes: Vec::new(),
        }
    }

    /// A fresh runtime name (lower case, unique), whose images this guard
    /// removes.
    pub fn runtime(&mut self) -> String {
        let name = format!("lb{}", &harness::unique()[..10]);
        self.runtimes.push(name.clone());
        name
    }

    pub fn repo_dir(&self, runtime: &str) -> PathBuf {
        self.dir.path().join(format!("tpl-{runtime}"))
    }

    /// A repository for `runtime` with `dockerfile`, busybox and a version
    /// file, in one commit; its HEAD.
    pub fn repo(&self, runtime: &str, dockerfile: &str) -> String {
        let dir = self.repo_dir(runtime);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(dir.join("version"), "1\n").unwrap();
        self.commit(runtime, "version", "1\n")
    }

    /// Writes `file` and commits; the new HEAD.
    pub fn commit(&self, runtime: &str, file: &str, content: &str) -> String {
        let dir = self.repo_dir(runtime);
        std::fs::write(dir.join(file), content).unwrap();
        git(&dir, &["add", "-A"]);
        git(
            &dir,
            &[
                "-c",
                "user.name=berth test",
                "-c",
                "user.email=test@berth.invalid",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "change",
            ],
        );
        git(&dir, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// `molecule-local/workspace-template-<runtime>`.
    pub fn repository(runtime: &str) -> String {
        format!("molecule-local/workspace-template-{runtime}")
    }
}

/// Removes the images tagged in the runtimes' repositories.
async fn remove_images(docker: &Docker, runtimes: &[String]) {
    for runtime in runtimes {
        for id in image_ids(docker, runtime).await {
            let force = RemoveImageOptionsBuilder::new().force(true).build();
            let _ = docker.remove_image(&id, Some(force), None).await;
        }
    }
}

impl Drop for Templates {
    fn drop(&mut self) {
        let runtimes = std::mem::take(&mut self.runtimes);
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let docker = harness::docker::docker().await;
                remove_images(&docker, &runtimes).await;
            });
        })
        .join();
        if done.is_err() {
            eprintln!("removing the test's built images failed");
        }
    }
}

/// The ids of the images tagged in `runtime`'s repository.
pub async fn image_ids(docker: &Docker, runtime: &str) -> Vec<String> {
    let filters = HashMap::from([(
        "reference".to_string(),
        vec![format!("{}:*", Templates::repository(runtime))],
    )]);
    let opts = ListImagesOptionsBuilder::new().filters(&filters).build();
    let mut ids: Vec<String> = docker
        .list_images(Some(opts))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Runs git in `dir`; its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Adds `runtime` to the catalogue of `w`'s database.
pub async fn add_runtime(w: &World, runtime: &str) {
    sqlx::query("INSERT INTO runtimes (name) VALUES ($1)")
        .bind(runtime)
        .execute(&w.pool)
        .await
        .unwrap();
}

/// Inserts a running workspace on `runtime` with a config.yaml.
pub async fn insert_on(w: &World, runtime: &str) -> WorkspaceId {
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO workspaces (name, runtime, host, config_files)
         VALUES ('lb', $1, $2, '{\"config.yaml\": \"name: lb\\n\"}')
         RETURNING id",
    )
    .bind(runtime)
    .bind(&w.host)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    WorkspaceId(id)
}

/// Starts berth in local-build mode (no registry) on `t`'s repositories,
/// with `extra` on top.
pub fn start_local(w: &mut World, t: &Templates, extra: &[(&str, &str)]) {
    let cache = t.cache.display().to_string();
    let mut env = vec![
        ("MOLECULE_IMAGE_REGISTRY", ""),
        ("MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX", t.prefix.as_str()),
        ("MOLECULE_LOCAL_BUILD_CACHE", cache.as_str()),
    ];
    env.extend_from_slice(extra);
    w.start(&env);
}

/// berth's whole log so far.
pub fn log(w: &World) -> String {
    let berth = w.berth.as_ref().expect("berth runs");
    std::fs::read_to_string(&berth.log).unwrap_or_default()
}

/// How many lines of `log` contain `needle`.
pub fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}
