//! A client-side bound on every database call of the controller. The
//! server's `statement_timeout` ends a statement that runs too long, but
//! its answer never arrives over a path that went silent (a half-open
//! connection: a dropped NAT entry, a server host that vanished): the
//! kernel retransmits for about fifteen minutes before it gives up, and
//! the pass awaiting the call holds its workspace that long. The bound
//! ends the call instead; the pool does not lend that connection again
//! until a ping through it answers.

use std::future::Future;
use std::time::Duration;

/// What the server allows one statement (`statement_timeout`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long berth waits for the answer to one call: longer than the
/// server's own limit, so a statement the server ends reports the
/// server's error, not this one.
pub const CALL_DEADLINE: Duration = Duration::from_secs(STATEMENT_TIMEOUT.as_secs() + 5);

/// How long the control loop waits for its read of the desired state
/// (this host's rows and the catalogue: plain selects, well under a
/// second on a healthy server). The loop also turns the watchdog and
/// every other trigger, so it does not wait out [`CALL_DEADLINE`] on a
/// connection gone half-open or a table an operator's `ALTER TABLE`
/// holds locked: past this bound the read fails like any other (the
/// desired side is incomplete until the next full read; the keys of a
/// round go back with a backoff).
pub const LOOP_READ_DEADLINE: Duration = Duration::from_secs(10);

/// A database call bounded by [`CALL_DEADLINE`].
pub trait Bounded<T>: Future<Output = Result<T, sqlx::Error>> + Sized {
    fn bounded(self) -> impl Future<Output = Result<T, sqlx::Error>> {
        within(CALL_DEADLINE, self)
    }
}

impl<T, F: Future<Output = Result<T, sqlx::Error>>> Bounded<T> for F {}

/// `call`, or an I/O error of kind `TimedOut` when no answer came within
/// `deadline`.
pub async fn within<T, E: From<sqlx::Error>>(
    deadline: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(deadline, call).await {
        Ok(answer) => answer,
        Err(_) => Err(E::from(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the database did not answer within {} s (the connection may be half-open)",
                deadline.as_secs_f64()
            ),
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_waits_longer_than_the_server_allows() {
        assert!(CALL_DEADLINE > STATEMENT_TIMEOUT);
        // The loop's read ends well before systemd's watchdog (30 s in
        // deploy/berth.service) would restart a loop that stopped turning.
        assert!(LOOP_READ_DEADLINE < Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_answer_ends_at_the_deadline() {
        let silent = std::future::pending::<Result<(), sqlx::Error>>();
        let err = within(Duration::from_secs(3), silent).await.unwrap_err();
        match err {
            sqlx::Error::Io(io) => {
                assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
                assert!(io.to_string().contains("within 3 s"), "{io}");
            }
            other => panic!("expected a timed-out I/O error, got {other:?}"),
        }
        let answered = within(Duration::from_secs(3), async { Ok::<_, sqlx::Error>(7) }).await;
        assert_eq!(answered.unwrap(), 7);
    }
}
