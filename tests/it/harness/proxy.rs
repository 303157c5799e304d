//! A TCP proxy to the engine's unix socket whose connections a test can
//! cut, to drop berth's event stream for real.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, UnixStream};
use tokio::task::AbortHandle;

pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug)]
pub struct SocketProxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl SocketProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let conns = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut unix) = UnixStream::connect(DOCKER_SOCKET).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        SocketProxy {
            addr,
            connections,
            accept,
        }
    }

    /// A client of the engine through this proxy.
    pub async fn docker(&self) -> bollard::Docker {
        bollard::Docker::connect_with_http(
            &format!("tcp://{}", self.addr),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
    }

    /// Drops every open connection; new ones are still accepted.
    pub fn cut(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A TCP proxy to `target` that a test can take down (cut every connection
/// and refuse new ones) and bring back, to stage an outage of a real
/// server without stopping it for everyone else.
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    accept: AbortHandle,
    freeze: tokio_util::sync::CancellationToken,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (conns, is_down) = (connections.clone(), down.clone());
        let freeze = tokio_util::sync::CancellationToken::new();
        let frozen_now = freeze.clone();
        let accept = tokio::spawn(async move {
            let mut freeze = freeze;
            while let Ok((mut client, _)) = listener.accept().await {
                if freeze.is_cancelled() {
                    // The connections made before a freeze stay frozen;
                    // new ones pass.
                    freeze = tokio_util::sync::CancellationToken::new();
                }
                if is_down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let frozen = freeze.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = frozen.cancelled() => {
                                // Half-open: both sockets stay open and
                                // nothing more passes either way.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        TcpProxy {
            addr,
            connections,
            down,
            accept,
            freeze: frozen_now,
        }
    }

    /// Makes every open connection half-open (nothing passes, nothing is
    /// closed) while new connections pass: a path that went silent under
    /// connections a client keeps. Once per proxy.
    pub fn freeze(&self) {
        self.freeze.cancel();
    }

    /// Cuts every connection and refuses new ones until [`TcpProxy::up`].
    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}
