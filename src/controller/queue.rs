//! The keyed work queue: triggers carry only a key, passes run one per key.
//!
//! Holds, for every key: at most one pending entry (adds dedupe), at most
//! one pass in flight (a key added while in flight runs again once, after
//! it is done), an optional timer (the earliest wins), and the per-key error
//! backoff (1 s doubling to 5 min with jitter, reset on success). The
//! controller loop owns it; nothing here blocks or spawns.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};

/// The error backoff of one key.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// The longest a timer waits: a later look is the periodic resync's (the
/// timer wheel also refuses deadlines beyond about two years, which a
/// runtime's provision timeout can name).
const TIMER_MAX: Duration = Duration::from_secs(3600);

type Backoff = Box<dyn Iterator<Item = Duration> + Send>;

/// A work queue over keys `K`.
pub struct WorkQueue<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    dirty: HashSet<K>,
    timers: DelayQueue<K>,
    timer_of: HashMap<K, (delay_queue::Key, Instant)>,
    retries: HashMap<K, Backoff>,
    enqueued_at: HashMap<K, Instant>,
    adds: u64,
    retried: u64,
}

impl<K> std::fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("ready", &self.ready.len())
            .field("active", &self.active.len())
            .field("timers", &self.timer_of.len())
            .finish()
    }
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    pub fn new() -> Self {
        WorkQueue {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            active: HashSet::new(),
            dirty: HashSet::new(),
            timers: DelayQueue::new(),
            timer_of: HashMap::new(),
            retries: HashMap::new(),
            enqueued_at: HashMap::new(),
            adds: 0,
            retried: 0,
        }
    }

    /// Asks for a pass over `key` now. A key already pending stays where it
    /// is; a key in flight runs once more after it is done.
    pub fn add(&mut self, key: K) {
        self.adds += 1;
        if self.active.contains(&key) {
            self.dirty.insert(key);
            return;
        }
        if self.queued.insert(key.clone()) {
            self.enqueued_at.insert(key.clone(), Instant::now());
            self.ready.push_back(key);
        }
    }

    /// Asks for a pass over `key` after `delay`; an earlier timer of the
    /// same key wins.
    pub fn add_after(&mut self, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let at = Instant::now() + delay.min(TIMER_MAX);
        match self.timer_of.get(&key) {
            Some((_, existing)) if *existing <= at => {}
            Some((timer, _)) => {
                let timer = *timer;
                self.timers.reset_at(&timer, at);
                self.timer_of.insert(key, (timer, at));
            }
            None => {
                let timer = self.timers.insert_at(key.clone(), at);
                self.timer_of.insert(key, (timer, at));
            }
        }
    }

    /// The next pending key that is not in flight, marked in flight, with
    /// how long it waited.
    pub fn pop(&mut self) -> Option<(K, Duration)> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        let waited = self
            .enqueued_at
            .remove(&key)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.active.insert(key.clone());
        Some((key, waited))
    }

    /// A key taken by [`WorkQueue::pop`] but not worked on now: pending
    /// again, first in line.
    pub fn put_back(&mut self, key: K) {
        self.active.remove(&key);
        self.dirty.remove(&key);
        if self.queued.insert(key.clone()) {
            self.enqueued_at.insert(key.clone(), Instant::now());
            self.ready.push_front(key);
        }
    }

    /// The pass over `key` finished; if it was added meanwhile, it is
    /// pending again.
    pub fn done(&mut self, key: &K) {
        self.active.remove(key);
        if self.dirty.remove(key) {
            self.add(key.clone());
        }
    }

    /// The pass over `key` failed: try again after the key's next backoff
    /// delay, which is returned.
    pub fn retry(&mut self, key: K) -> Duration {
        self.retried += 1;
        let delay = self
            .retries
            .entry(key.clone())
            .or_insert_with(|| Box::new(crate::backoff::exponential(RETRY_MIN, RETRY_MAX)))
            .next()
            .unwrap_or(RETRY_MAX);
        self.add_after(key, delay);
        delay
    }

    /// The pass over `key` succeeded: its backoff starts over.
    pub fn forget(&mut self, key: &K) {
        self.retries.remove(key);
    }

    /// Waits for the next timer to fire and makes its key pending. Never
    /// resolves while no timer is set, so it can sit in a `select!`.
    pub async fn next_timer(&mut self) -> K {
        loop {
            if self.timers.is_empty() {
                futures::future::pending::<()>().await;
            }
            if let Some(expired) = self.timers.next().await {
                let key = expired.into_inner();
                self.timer_of.remove(&key);
                self.add(key.clone());
                return key;
            }
        }
    }

    /// Keys pending now (`workqueue_depth`).
    pub fn depth(&self) -> usize {
        self.ready.len()
    }

    pub fn in_flight(&self) -> usize {
        self.active.len()
    }

    /// Adds since start (`workqueue_adds_total`).
    pub fn adds(&self) -> u64 {
        self.adds
    }

    /// Retries since start (`workqueue_retries_total`).
    pub fn retries(&self) -> u64 {
        self.retried
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_dedupe_and_keep_order() {
        let mut q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.depth(), 2);
        assert_eq!(q.pop().map(|p| p.0), Some("a"));
        assert_eq!(q.pop().map(|p| p.0), Some("b"));
        assert_eq!(q.pop(), None);
        assert_eq!(q.adds(), 3);
    }

    #[test]
    fn a_key_in_flight_is_not_handed_out_twice_but_runs_once_more_after() {
        let mut q = WorkQueue::new();
        q.add("a");
        let (key, _) = q.pop().unwrap();
        q.add("a");
        q.add("a");
        assert_eq!(q.pop(), None, "one pass per key at a time");
        q.done(&key);
        assert_eq!(q.pop().map(|p| p.0), Some("a"));
        q.done(&"a");
        assert_eq!(q.pop(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_order_and_the_earliest_wins() {
        let mut q = WorkQueue::new();
        q.add_after("late", Duration::from_secs(10));
        q.add_after("soon", Duration::from_secs(5));
        q.add_after("soon", Duration::from_secs(60));
        q.add_after("late", Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(q.next_timer().await, "late");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(q.next_timer().await, "soon");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(q.depth(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_per_key_and_reset_on_success() {
        let mut q = WorkQueue::new();
        let delays: Vec<Duration> = (0..12).map(|_| q.retry("bad")).collect();
        assert!(
            delays[0] >= RETRY_MIN && delays[0] < Duration::from_secs(3),
            "{delays:?}"
        );
        assert!(delays.iter().all(|d| *d <= RETRY_MAX));
        assert_eq!(delays[11], RETRY_MAX);
        assert!(
            delays.windows(2).take(6).all(|w| w[1] >= w[0]),
            "{delays:?}"
        );
        // Another key has its own clock.
        assert!(q.retry("other") < Duration::from_secs(3));
        q.forget(&"bad");
        assert!(q.retry("bad") < Duration::from_secs(3));
        assert_eq!(q.retries(), 14);
    }

    #[test]
    fn a_key_put_back_is_first_in_line_and_free_to_pop_again() {
        let mut q = WorkQueue::new();
        q.add("a");
        q.add("b");
        let (a, _) = q.pop().unwrap();
        q.put_back(a);
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.depth(), 2);
        assert_eq!(q.pop().map(|p| p.0), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_years_away_waits_an_hour_and_does_not_panic() {
        let mut q = WorkQueue::new();
        q.add_after("far", Duration::from_secs(3 * 365 * 24 * 3600));
        tokio::time::advance(Duration::from_secs(3601)).await;
        assert_eq!(q.next_timer().await, "far");
    }
}
