//! The Docker Engine connection and its errors, shared by the observer
//! (which only reads) and the executor (the only code that changes
//! anything).

mod error;

pub use error::DockerError;

use bollard::Docker;

/// Connects to `DOCKER_HOST` (or the local socket) and negotiates the API
/// version: the engine may be older than bollard (Debian's 20.10 is 1.41).
pub async fn connect(docker_host: Option<&str>) -> Result<Docker, DockerError> {
    let docker = match docker_host {
        None => Docker::connect_with_local_defaults(),
        Some(host) if host.starts_with("unix://") => {
            Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION)
        }
        Some(host) => Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION),
    }
    .map_err(|e| DockerError::from(e).at(endpoint(docker_host)))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| DockerError::from(e).at(endpoint(docker_host)))
}

/// The endpoint as an operator names it: `DOCKER_HOST`, else the local
/// socket bollard's defaults use.
fn endpoint(docker_host: Option<&str>) -> &str {
    docker_host.unwrap_or("unix:///var/run/docker.sock")
}
