//! Send-rate limits of the Telegram channel: a minimum interval between two
//! messages to the same chat, and a maximum rate over all chats.
//!
//! The Telegram Bots FAQ ("Broadcasting to Users") asks for at most about one
//! message per second to one chat, about 30 per second overall and 20 per
//! minute to one group. Telegram returns 429 to faster senders. The limiter
//! keeps under the configured rates so that 429 stays the exception.
//!
//! Waiting is fair: messages to one chat queue on a FIFO lock, and global
//! send slots are handed out in request order. Nothing polls, because every
//! wait is one `tokio::time::sleep_until`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

/// Number of tracked chats above which idle chats are forgotten.
const MIN_PRUNE_THRESHOLD: usize = 1024;

/// Limits the rate of sends per chat and over all chats.
pub struct RateLimiter {
    per_chat_interval: Duration,
    global_interval: Duration,
    /// Earliest start of the next send over all chats.
    global_next: Mutex<Instant>,
    chats: Mutex<ChatTable>,
}

/// Per-chat state. The map only has chats that sent within the last
/// interval or are sending now, plus those added since the last prune.
struct ChatTable {
    /// Earliest start of the chat's next send, behind a FIFO lock that
    /// senders to the chat hold while they wait.
    next_send: HashMap<String, Arc<tokio::sync::Mutex<Instant>>>,
    /// Table size at which the next prune runs.
    prune_at: usize,
}

impl RateLimiter {
    /// Builds a limiter that starts sends to one chat at least
    /// `per_chat_interval` apart, and at most `global_per_second` sends per
    /// second over all chats. A zero interval turns the per-chat limit off.
    ///
    /// `global_per_second` must be at least 1; 0 is treated as 1.
    pub fn new(per_chat_interval: Duration, global_per_second: u32) -> RateLimiter {
        RateLimiter {
            per_chat_interval,
            global_interval: global_interval(global_per_second),
            global_next: Mutex::new(Instant::now()),
            chats: Mutex::new(ChatTable {
                next_send: HashMap::new(),
                prune_at: MIN_PRUNE_THRESHOLD,
            }),
        }
    }

    /// Waits until a message to `chat` may be sent, and records the send.
    ///
    /// `chat` is any key that is equal for equal chats. Cancelling the
    /// returned future before it completes records no send to the chat, but
    /// the global slot it had reserved stays used.
    pub async fn acquire(&self, chat: &str) {
        if self.per_chat_interval.is_zero() {
            self.acquire_global().await;
            return;
        }

        let state = self.chat_state(chat);
        let mut next_send = state.lock().await;
        sleep_until(*next_send).await;
        self.acquire_global().await;
        *next_send = Instant::now() + self.per_chat_interval;
    }

    /// Reserves the next global send slot and waits for it.
    async fn acquire_global(&self) {
        let slot = {
            let mut next = lock(&self.global_next);
            let slot = (*next).max(Instant::now());
            *next = slot + self.global_interval;
            slot
        };
        sleep_until(slot).await;
    }

    /// Returns the state of `chat`, adding it if needed. Forgets idle chats
    /// whenever the table has doubled since the last prune.
    fn chat_state(&self, chat: &str) -> Arc<tokio::sync::Mutex<Instant>> {
        let now = Instant::now();
        let mut table = lock(&self.chats);
        if table.next_send.len() >= table.prune_at {
            table.next_send.retain(|_, state| is_busy(state, now));
            table.prune_at = (table.next_send.len() * 2).max(MIN_PRUNE_THRESHOLD);
        }
        table
            .next_send
            .entry(chat.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(now)))
            .clone()
    }

    /// Returns the number of chats whose state is kept.
    pub fn tracked_chats(&self) -> usize {
        lock(&self.chats).next_send.len()
    }
}

impl fmt::Debug for RateLimiter {
    // Chat ids stay out of the output, because they identify recipients.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_chat_interval", &self.per_chat_interval)
            .field("global_interval", &self.global_interval)
            .field("tracked_chats", &self.tracked_chats())
            .finish()
    }
}

/// Returns the spacing of global send slots, rounded up to whole nanoseconds
/// so that `global_per_second` slots never fit in less than a second.
fn global_interval(global_per_second: u32) -> Duration {
    Duration::from_nanos(NANOS_PER_SECOND.div_ceil(u64::from(global_per_second.max(1))))
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Returns true if a sender has locked the chat's state, or the chat's next send
/// may not start yet. Only such chats constrain later sends.
fn is_busy(state: &Arc<tokio::sync::Mutex<Instant>>, now: Instant) -> bool {
    Arc::strong_count(state) > 1 || state.try_lock().map_or(true, |next_send| *next_send > now)
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves the
/// data valid even when it is cut short.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn elapsed_ms(start: Instant) -> u128 {
        (Instant::now() - start).as_millis()
    }

    #[tokio::test(start_paused = true)]
    async fn same_chat_waits_interval() {
        let limiter = RateLimiter::new(SECOND, 30);
        let start = Instant::now();

        let mut times = Vec::new();
        for _ in 0..3 {
            limiter.acquire("42").await;
            times.push(elapsed_ms(start));
        }

        assert_eq!(times, [0, 1000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn other_chat_is_not_held_up() {
        let limiter = Arc::new(RateLimiter::new(SECOND, 30));
        let start = Instant::now();
        limiter.acquire("42").await;

        let waiting = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move {
                limiter.acquire("42").await;
                elapsed_ms(start)
            }
        });
        tokio::task::yield_now().await;
        limiter.acquire("43").await;
        let other = elapsed_ms(start);

        // Tokio timers round up to whole milliseconds.
        assert!(
            (33..=34).contains(&other),
            "second chat waited {other} ms, not one global slot"
        );
        assert_eq!(waiting.await.unwrap(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn global_rate_is_kept() {
        let limiter = Arc::new(RateLimiter::new(SECOND, 30));
        let start = Instant::now();
        let (sender, mut receiver) = mpsc::unbounded_channel();

        for chat in 0..90 {
            let limiter = Arc::clone(&limiter);
            let sender = sender.clone();
            tokio::spawn(async move {
                limiter.acquire(&chat.to_string()).await;
                sender.send(Instant::now()).unwrap();
            });
        }
        drop(sender);
        let mut times = Vec::new();
        while let Some(time) = receiver.recv().await {
            times.push(time - start);
        }

        assert_eq!(times.len(), 90);
        for window_start in 0..3 {
            let from = SECOND * window_start;
            let in_window = times
                .iter()
                .filter(|t| **t >= from && **t < from + SECOND)
                .count();
            assert!(
                in_window <= 30,
                "{in_window} sends in second {window_start}"
            );
        }
        assert!(
            times.iter().max().unwrap() < &(SECOND * 3),
            "sends took {:?}",
            times.iter().max()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn same_chat_is_served_in_request_order() {
        let limiter = Arc::new(RateLimiter::new(SECOND, 30));
        let start = Instant::now();
        let (sender, mut receiver) = mpsc::unbounded_channel();

        for index in 0..4 {
            let limiter = Arc::clone(&limiter);
            let sender = sender.clone();
            tokio::spawn(async move {
                limiter.acquire("@alerts").await;
                sender.send((index, elapsed_ms(start))).unwrap();
            });
            tokio::task::yield_now().await;
        }
        drop(sender);
        let mut order = Vec::new();
        while let Some(entry) = receiver.recv().await {
            order.push(entry);
        }

        assert_eq!(order, [(0, 0), (1, 1000), (2, 2000), (3, 3000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_interval_turns_chat_limit_off() {
        let limiter = RateLimiter::new(Duration::ZERO, 10);
        let start = Instant::now();

        limiter.acquire("42").await;
        limiter.acquire("42").await;

        assert_eq!(elapsed_ms(start), 100);
        assert_eq!(limiter.tracked_chats(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_chats_are_forgotten() {
        let limiter = RateLimiter::new(Duration::from_millis(10), 1000);

        for chat in 0..MIN_PRUNE_THRESHOLD {
            limiter.acquire(&chat.to_string()).await;
        }
        assert_eq!(limiter.tracked_chats(), MIN_PRUNE_THRESHOLD);
        tokio::time::advance(SECOND).await;
        limiter.acquire("new").await;

        assert_eq!(limiter.tracked_chats(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn recent_chats_are_kept_on_prune() {
        let limiter = RateLimiter::new(SECOND * 60, 1000);

        for chat in 0..MIN_PRUNE_THRESHOLD {
            limiter.acquire(&chat.to_string()).await;
        }
        limiter.acquire("new").await;

        assert_eq!(limiter.tracked_chats(), MIN_PRUNE_THRESHOLD + 1);
        let start = Instant::now();
        limiter.acquire("0").await;
        assert!(
            elapsed_ms(start) >= 58_000,
            "chat 0 waited {} ms",
            elapsed_ms(start)
        );
    }
}
