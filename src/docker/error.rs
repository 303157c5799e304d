//! Docker errors by type, never by message text (STYLE: bollard).
//!
//! The engine's HTTP status decides the kind: 404 not found, 409 conflict,
//! 401/403 auth, 429 rate limited, other 4xx bad request, 5xx and transport
//! failures transient. A transient error means "unknown": callers never
//! read it as "absent".

use bollard::errors::Error;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    #[error("not found: {message}")]
    NotFound { message: String },
    #[error("conflict: {message}")]
    Conflict { message: String },
    #[error("registry authentication failed: {message}")]
    Auth { message: String },
    #[error("registry rate limit: {message}")]
    RateLimited { message: String },
    #[error("refused by the engine ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the engine failed ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("cannot reach the engine: {message}")]
    Transport { message: String },
    /// An error reported inside a stream that began with 200 (a pull or a
    /// build), with the engine's words.
    #[error("{message}")]
    Stream { message: String },
    #[error("unexpected answer from the engine: {message}")]
    Other { message: String },
}

/// An error with the causes under it (`client error (Connect): No such
/// file or directory (os error 2)`): the top line alone names neither.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

impl DockerError {
    /// The error with the engine endpoint it was met at, for a transport
    /// error (where the endpoint is what an operator checks first).
    pub fn at(self, endpoint: &str) -> Self {
        match self {
            DockerError::Transport { message } => DockerError::Transport {
                message: format!("{endpoint}: {message}"),
            },
            other => other,
        }
    }

    /// The object is not there (a definite answer, unlike a transient one).
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, DockerError::Conflict { .. })
    }

    /// Worth retrying with backoff; the state of the object is unknown.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DockerError::Server { .. }
                | DockerError::Transport { .. }
                | DockerError::RateLimited { .. }
        )
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DockerError::NotFound { .. } => "not_found",
            DockerError::Conflict { .. } => "conflict",
            DockerError::Auth { .. } => "auth",
            DockerError::RateLimited { .. } => "rate_limited",
            DockerError::Refused { .. } => "refused",
            DockerError::Server { .. } => "server",
            DockerError::Transport { .. } => "transport",
            DockerError::Stream { .. } => "stream",
            DockerError::Other { .. } => "other",
        }
    }

    /// Classifies an error reported inside a 200 stream. Such errors carry
    /// no status; the registry's error codes (`toomanyrequests`,
    /// `unauthorized`, `denied`, `manifest unknown`) are part of the
    /// distribution protocol, so they are matched as codes.
    pub fn from_stream(message: String) -> Self {
        let lower = message.to_ascii_lowercase();
        if lower.contains("toomanyrequests") {
            DockerError::RateLimited { message }
        } else if is_auth_refusal(&lower) {
            DockerError::Auth { message }
        } else if lower.contains("manifest unknown") {
            DockerError::NotFound { message }
        } else {
            DockerError::Stream { message }
        }
    }

    /// Whether a message carries a registry's refusal: rate limit or
    /// credentials.
    pub fn is_registry_refusal(message: &str) -> bool {
        let lower = message.to_ascii_lowercase();
        lower.contains("toomanyrequests") || is_auth_refusal(&lower)
    }
}

/// A registry's refusal of the credentials sent (or of none), in its
/// words; `lower` is lower-cased.
fn is_auth_refusal(lower: &str) -> bool {
    lower.contains("unauthorized")
        || lower.contains("denied")
        || lower.contains("no basic auth credentials")
}

impl From<Error> for DockerError {
    fn from(e: Error) -> Self {
        match e {
            Error::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 => DockerError::NotFound { message },
                409 => DockerError::Conflict { message },
                401 | 403 => DockerError::Auth { message },
                429 => DockerError::RateLimited { message },
                400..=499 => DockerError::Refused {
                    status: status_code,
                    message,
                },
                _ => DockerError::Server {
                    status: status_code,
                    message,
                },
            },
            Error::DockerStreamError { error } => DockerError::from_stream(error),
            Error::IOError { .. }
            | Error::HyperResponseError { .. }
            | Error::HyperLegacyError { .. }
            | Error::RequestTimeoutError
            | Error::SocketNotFoundError(_) => DockerError::Transport {
                message: with_causes(&e),
            },
            other => DockerError::Other {
                message: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> DockerError {
        Error::DockerResponseServerError {
            status_code: code,
            message: "m".into(),
        }
        .into()
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert!(status(404).is_not_found());
        assert!(status(409).is_conflict());
        assert_eq!(status(401).kind(), "auth");
        assert_eq!(status(403).kind(), "auth");
        assert_eq!(status(429).kind(), "rate_limited");
        assert_eq!(status(400).kind(), "refused");
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(!status(404).is_transient());
    }

    #[test]
    fn a_dropped_connection_is_transient_not_absent() {
        let e: DockerError = Error::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        }
        .into();
        assert!(e.is_transient());
        assert!(!e.is_not_found());
    }

    #[test]
    fn registry_codes_inside_a_stream_are_classified() {
        let e = |m: &str| DockerError::from(Error::DockerStreamError { error: m.into() });
        assert_eq!(e("toomanyrequests: slow down").kind(), "rate_limited");
        assert_eq!(e("unauthorized: authentication required").kind(), "auth");
        assert_eq!(e("manifest unknown: manifest unknown").kind(), "not_found");
        assert_eq!(e("no space left on device").kind(), "stream");
    }
}
