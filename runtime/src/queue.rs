//! The reconcile queue: each key at most once, never two reconciles of one key at once, delayed
//! re-queues, and a count of each key's failures in a row for the error policy.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use dora_store::ObjectKey;
use foldhash::{HashMap, HashSet};
use tokio::time::Instant;

/// Why a key was reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The object itself changed (or was listed).
    Changed,
    /// A related object changed (an owned or watched kind).
    Related,
    /// The previous reconcile asked to run again after a delay.
    Requeue,
    /// The previous reconcile failed.
    Retry,
    /// Asked for from outside the watchers (an action, a timer of the controller).
    Signal,
}

impl Trigger {
    /// The name logged in the reconcile span.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Changed => "changed",
            Trigger::Related => "related",
            Trigger::Requeue => "requeue",
            Trigger::Retry => "retry",
            Trigger::Signal => "signal",
        }
    }
}

/// Queue state; owned by the controller's loop, not shared.
#[derive(Default)]
pub(crate) struct Queue {
    ready: VecDeque<ObjectKey>,
    triggers: HashMap<ObjectKey, Trigger>,
    delayed: BTreeMap<(Instant, u64), (ObjectKey, Trigger)>,
    sequence: u64,
    running: HashSet<ObjectKey>,
    /// Keys that were added while running; they run again when the current one ends.
    dirty: HashMap<ObjectKey, Trigger>,
    failures: HashMap<ObjectKey, u32>,
    /// Keys a batched add put in `delayed` that have not come due yet.
    batched: HashSet<ObjectKey>,
}

impl Queue {
    /// Adds `key` unless it is already waiting.
    pub fn add(&mut self, key: ObjectKey, trigger: Trigger) {
        if self.running.contains(&key) {
            self.dirty.entry(key).or_insert(trigger);
        } else if !self.triggers.contains_key(&key) {
            self.triggers.insert(key.clone(), trigger);
            self.ready.push_back(key);
        }
    }

    /// Adds `key` once `window` has passed, unless it is already waiting: every batched add
    /// within the window ends in one reconcile.
    pub fn add_batched(&mut self, key: ObjectKey, trigger: Trigger, window: Duration) {
        if window.is_zero() {
            return self.add(key, trigger);
        }
        if self.triggers.contains_key(&key) || self.batched.contains(&key) {
            return;
        }
        self.batched.insert(key.clone());
        self.add_after(key, trigger, window);
    }

    /// Adds `key` once `after` has passed.
    pub fn add_after(&mut self, key: ObjectKey, trigger: Trigger, after: Duration) {
        self.sequence += 1;
        self.delayed
            .insert((Instant::now() + after, self.sequence), (key, trigger));
    }

    /// When the next delayed key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(at, _)| *at)
    }

    /// Moves due keys into the ready queue.
    pub fn promote_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, trigger) = entry.remove();
            self.batched.remove(&key);
            self.add(key, trigger);
        }
    }

    /// The next key to reconcile, marked running.
    pub fn take(&mut self) -> Option<(ObjectKey, Trigger)> {
        let key = self.ready.pop_front()?;
        let trigger = self.triggers.remove(&key).unwrap_or(Trigger::Changed);
        self.running.insert(key.clone());
        Some((key, trigger))
    }

    /// Marks `key` done; re-adds it if it changed while running. Returns how many times in a
    /// row it has failed now: 0 after a success.
    pub fn done(&mut self, key: &ObjectKey, failed: bool) -> u32 {
        self.running.remove(key);
        if let Some(trigger) = self.dirty.remove(key) {
            self.add(key.clone(), trigger);
        }
        if !failed {
            self.failures.remove(key);
            return 0;
        }
        let failures = self.failures.entry(key.clone()).or_default();
        *failures += 1;
        *failures
    }

    /// Keys waiting to run (ready or delayed).
    pub fn depth(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// Keys running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use dora_crds::Kind;

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Workload, "z", "w", name)
    }

    #[test]
    fn a_key_waits_once_and_never_runs_twice_at_once() {
        let mut queue = Queue::default();
        queue.add(key("a"), Trigger::Changed);
        queue.add(key("a"), Trigger::Related);
        assert_eq!(queue.depth(), 1);
        let (a, _) = queue.take().unwrap();
        queue.add(key("a"), Trigger::Related);
        assert!(
            queue.take().is_none(),
            "a is running: it must not be handed out"
        );
        assert_eq!(queue.done(&a, false), 0);
        assert_eq!(queue.take(), Some((key("a"), Trigger::Related)));
    }

    /// Sleeps until the queue's next delayed key is due and promotes it.
    async fn until_due(queue: &mut Queue) {
        let due = queue.next_due().expect("a delayed key");
        tokio::time::sleep_until(due).await;
        queue.promote_due();
    }

    #[tokio::test]
    async fn batched_adds_within_a_window_run_once() {
        let window = Duration::from_millis(20);
        let mut queue = Queue::default();
        for _ in 0..3 {
            queue.add_batched(key("a"), Trigger::Related, window);
        }
        assert!(queue.take().is_none(), "a waits for its window");
        until_due(&mut queue).await;
        assert_eq!(queue.take(), Some((key("a"), Trigger::Related)));
        assert_eq!(queue.next_due(), None, "once for the whole window");
        queue.done(&key("a"), false);
        // Already waiting: a batched add does not queue it a second time.
        queue.add(key("b"), Trigger::Changed);
        queue.add_batched(key("b"), Trigger::Related, window);
        assert_eq!(queue.next_due(), None);
        assert_eq!(queue.take(), Some((key("b"), Trigger::Changed)));
        assert!(queue.take().is_none());
    }

    #[test]
    fn failures_are_counted_in_a_row_and_success_resets() {
        let mut queue = Queue::default();
        let mut run = |failed| {
            queue.add(key("a"), Trigger::Changed);
            let (a, _) = queue.take().unwrap();
            queue.done(&a, failed)
        };
        assert_eq!([run(true), run(true), run(true)], [1, 2, 3]);
        assert_eq!(run(false), 0);
        assert_eq!(run(true), 1);
    }
}
