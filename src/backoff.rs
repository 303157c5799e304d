//! Jittered exponential backoff, the one shape every retry in berth uses
//! (stream reconnects, the database session, per-key error requeues).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays from `min` doubling to `max`, with jitter, never ending and never
/// above `max` (backon adds jitter on top of the delay: it is clamped here).
pub fn exponential(min: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .map(move |d| d.min(max))
}

/// The reconnect delays of a lost stream or session: 200 ms up to 30 s.
pub fn reconnect() -> impl Iterator<Item = Duration> + Send {
    exponential(Duration::from_millis(200), Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let delays: Vec<Duration> = exponential(Duration::from_secs(1), Duration::from_secs(300))
            .take(20)
            .collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(1)));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(300)));
        assert_eq!(delays[19], Duration::from_secs(300));
    }
}
