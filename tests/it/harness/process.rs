//! `berth run` as a real process, with test-sized intervals, for the
//! controller's end-to-end tests. It is ended by its pid (SIGKILL on drop).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::TestDb;

/// The settings every end-to-end test runs berth with; a test may add or
/// override any of them.
pub fn base_env(db: &TestDb, host: &str) -> Vec<(String, String)> {
    let env = super::env();
    [
        ("DATABASE_URL", db.url.clone()),
        ("BERTH_HOST_ID", host.to_string()),
        (
            "MOLECULE_IMAGE_REGISTRY",
            format!("{}/berth-test", env.registry),
        ),
        ("BERTH_NETWORK", format!("bn-{host}")),
        ("BERTH_LISTEN", "127.0.0.1:0".into()),
        ("BERTH_CONCURRENCY", "4".into()),
        ("BERTH_RESYNC_INTERVAL", "3s".into()),
        ("BERTH_LEASE_TTL", "3s".into()),
        ("BERTH_READY_MIN_UPTIME", "2s".into()),
        ("BERTH_ORPHAN_GRACE", "3s".into()),
        ("BERTH_CRASH_BACKOFF_INITIAL", "1s".into()),
        ("BERTH_CRASH_BACKOFF_MAX", "5s".into()),
        ("BERTH_PROVISION_TIMEOUT", "60s".into()),
        ("BERTH_STOP_TIMEOUT", "2s".into()),
        ("BERTH_SHUTDOWN_GRACE", "10s".into()),
        ("BERTH_PIN_DEBOUNCE", "0s".into()),
        ("BERTH_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info,berth=debug".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A running `berth run`.
#[derive(Debug)]
pub struct Berth {
    child: Child,
    pub log: PathBuf,
}

impl Berth {
    pub fn start(env: &[(String, String)]) -> Berth {
        Berth::start_with(&["run"], env)
    }

    /// `berth` with `args` (`run` and its flags).
    pub fn start_with(args: &[&str], env: &[(String, String)]) -> Berth {
        let log = std::env::temp_dir().join(format!("berth-test-{}.log", super::unique()));
        let file = std::fs::File::create(&log).expect("a log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        let child = cmd.spawn().expect("starting berth run");
        Berth { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("a running child has a pid")
    }

    /// The last lines of berth's log, for failure messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends `signal` (e.g. "TERM") to berth's pid.
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("running kill");
        assert!(status.success());
    }

    /// Kills berth at once (SIGKILL) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for berth to exit; its exit code.
    pub async fn wait(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(|s| s.ok())
            .and_then(|s| s.code())
    }
}

impl Drop for Berth {
    /// Kills berth and waits until it is gone (and a request it sent just
    /// before has landed), so a cleanup after this cannot race it.
    fn drop(&mut self) {
        if self.child.start_kill().is_err() {
            return;
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A port nothing listens on now, for a berth's admin listener.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// GET `path` from a berth's admin listener on `port`: the whole answer,
/// status line and headers included. Waits up to 5 s for the listener.
pub async fn get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..50 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut body = String::new();
            stream.read_to_string(&mut body).await.unwrap();
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("berth's admin listener on {port} does not answer");
}
