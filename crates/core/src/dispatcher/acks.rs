//! Acks and nacks of one consumer channel, sent by a task of their own.
//!
//! Each message hands its outcome to [`AckQueue`] and goes on without waiting
//! for the frame to be written. The task takes every outcome that is ready
//! at once and covers a run of consecutive delivery tags with a single
//! `basic.ack` with `multiple` set. A tag that waits behind a slower message
//! is acked on its own right away, so a slow delivery never holds back the
//! acks of the others and the prefetch window keeps moving.
//!
//! Delivery tags of a channel count up from 1 in delivery order, and every
//! delivery of the channel goes to this consumer. A delivery whose handling
//! ended without an outcome (a panic) is left unsettled. It occupies a prefetch
//! slot until the channel closes, at the end of the broker session or when
//! the broker's consumer timeout closes the channel, and then returns to its
//! queue. A multiple ack would settle it too, so from then on the channel's
//! acks go out one by one.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tracing::warn;

/// Most outcomes taken from the queue per round of frames.
const MAX_BATCH: usize = 256;

/// Outcome of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    Ack,
    /// Returned to its queue, for another try.
    Requeue,
    /// Its handling ended without an outcome; the delivery stays unsettled.
    Abandoned,
}

/// A frame that settles deliveries at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// With `multiple`, acks every unsettled delivery up to `tag` too.
    Ack { tag: u64, multiple: bool },
    Requeue { tag: u64 },
}

/// Settlement state of each delivery tag, and the frames that settle the ready ones.
#[derive(Debug, Default)]
pub(crate) struct AckBook {
    /// Every tag up to this one is settled at the broker.
    settled_through: u64,
    /// Tags above `settled_through` with an outcome: `true` once its frame
    /// was sent on its own, `false` while its ack waits for a frame.
    pending: BTreeMap<u64, bool>,
    /// Set once a delivery was abandoned: every ack then goes out alone.
    one_by_one: bool,
}

impl AckBook {
    /// Takes a batch of outcomes and returns the frames that settle them:
    /// nacks first, then acks.
    ///
    /// A multiple ack names the highest tag of the run whose ack is still
    /// unsent. RabbitMQ (`collect_acks` in `rabbit_channel`) closes the
    /// channel with "unknown delivery tag" when that tag is already settled.
    pub(crate) fn frames_for(&mut self, outcomes: &[(u64, Settlement)]) -> Vec<Frame> {
        if self.one_by_one || outcomes.iter().any(|&(_, settlement)| settlement == Settlement::Abandoned) {
            return self.frames_one_by_one(outcomes);
        }
        let mut frames = Vec::new();
        for &(tag, settlement) in outcomes {
            if tag <= self.settled_through || self.pending.contains_key(&tag) {
                warn!(delivery_tag = tag, "delivery settled twice; ignoring the second outcome");
                continue;
            }
            match settlement {
                Settlement::Requeue => {
                    frames.push(Frame::Requeue { tag });
                    self.pending.insert(tag, true);
                }
                Settlement::Ack => {
                    self.pending.insert(tag, false);
                }
                // Batches with an abandoned delivery went to `frames_one_by_one`.
                Settlement::Abandoned => {}
            }
        }

        let mut highest_unsent = None;
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.settled_through + 1 {
                break;
            }
            let (tag, sent) = entry.remove_entry();
            if !sent {
                highest_unsent = Some(tag);
            }
            self.settled_through = tag;
        }
        if let Some(tag) = highest_unsent {
            frames.push(Frame::Ack { tag, multiple: true });
        }

        // These wait behind an unsettled tag: ack each now, alone.
        for (&tag, sent) in &mut self.pending {
            if !*sent {
                frames.push(Frame::Ack { tag, multiple: false });
                *sent = true;
            }
        }
        frames
    }

    /// Settles each delivery with a frame of its own from now on, and drops
    /// the stored tags, which no multiple ack needs any more.
    fn frames_one_by_one(&mut self, outcomes: &[(u64, Settlement)]) -> Vec<Frame> {
        if !self.one_by_one {
            self.one_by_one = true;
            warn!("a message ended without settling its delivery; acking one by one until the channel closes");
        }
        let mut frames = Vec::new();
        for (tag, sent) in std::mem::take(&mut self.pending) {
            if !sent {
                frames.push(Frame::Ack { tag, multiple: false });
            }
        }
        for &(tag, settlement) in outcomes {
            match settlement {
                Settlement::Ack => frames.push(Frame::Ack { tag, multiple: false }),
                Settlement::Requeue => frames.push(Frame::Requeue { tag }),
                Settlement::Abandoned => {}
            }
        }
        frames.sort_by_key(|frame| matches!(frame, Frame::Ack { .. }));
        frames
    }
}

/// The sending end, cloned into every message's handle.
#[derive(Clone)]
pub(crate) struct AckQueue {
    sender: mpsc::UnboundedSender<(u64, Settlement)>,
}

impl AckQueue {
    /// Returns the handle through which the task of the delivery with `tag`
    /// reports its outcome.
    pub(crate) fn pending(&self, tag: u64) -> PendingDelivery {
        PendingDelivery { tag, queue: Some(self.clone()) }
    }

    fn send(&self, tag: u64, settlement: Settlement) {
        if self.sender.send((tag, settlement)).is_err() {
            // The ack task ends only after every queue handle is dropped.
            warn!(delivery_tag = tag, "ack task gone; the broker will redeliver the message");
        }
    }
}

/// A delivery whose outcome is still owed. Dropped without one, for example
/// by a panic, it reports itself abandoned.
pub(crate) struct PendingDelivery {
    tag: u64,
    queue: Option<AckQueue>,
}

impl PendingDelivery {
    pub(crate) fn settle(mut self, settlement: Settlement) {
        if let Some(queue) = self.queue.take() {
            queue.send(self.tag, settlement);
        }
    }
}

impl Drop for PendingDelivery {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.send(self.tag, Settlement::Abandoned);
        }
    }
}

/// Starts the task that settles the deliveries of `channel`. It ends, after
/// sending every frame it owes, once each [`AckQueue`] clone is dropped.
pub(crate) fn start(channel: Channel) -> (AckQueue, AckTask) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(channel, receiver));
    (AckQueue { sender }, AckTask(task))
}

/// The running ack task of one consumer channel. Dropping it aborts the
/// task, so that a consumer aborted at the end of a session leaves no task
/// waiting on a dead channel.
pub(crate) struct AckTask(JoinHandle<()>);

impl AckTask {
    /// Waits until the task has sent every frame it owes.
    pub(crate) async fn finish(mut self) -> Result<(), JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AckTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(channel: Channel, mut receiver: mpsc::UnboundedReceiver<(u64, Settlement)>) {
    let mut book = AckBook::default();
    let mut outcomes = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut outcomes, MAX_BATCH).await > 0 {
        let frames = book.frames_for(&outcomes);
        outcomes.clear();
        send(&channel, &frames).await;
    }
}

/// Sends the nacks one after another, then all acks together. A multiple
/// ack must reach the broker after any nack below its tag, and the acks do
/// not depend on each other's order.
async fn send(channel: &Channel, frames: &[Frame]) {
    for frame in frames {
        if let Frame::Requeue { tag } = *frame {
            let options = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
            if let Err(err) = channel.basic_nack(tag, options).await {
                warn!(error = %err, delivery_tag = tag, "nack failed; the broker will redeliver the message when the channel closes");
            }
        }
    }
    let acks = frames.iter().filter_map(|frame| match *frame {
        Frame::Ack { tag, multiple } => Some(async move {
            if let Err(err) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                warn!(error = %err, delivery_tag = tag, multiple, "ack failed; the broker will redeliver the message");
            }
        }),
        Frame::Requeue { .. } => None,
    });
    join_all(acks).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(tags: &[u64]) -> Vec<(u64, Settlement)> {
        tags.iter().map(|&tag| (tag, Settlement::Ack)).collect()
    }

    #[test]
    fn consecutive_tags_take_one_multiple_ack() {
        let mut book = AckBook::default();
        let frames = book.frames_for(&acks(&[2, 1, 3]));
        assert_eq!(frames, vec![Frame::Ack { tag: 3, multiple: true }]);
    }

    #[test]
    fn tag_behind_a_gap_is_acked_alone() {
        let mut book = AckBook::default();
        let frames = book.frames_for(&acks(&[1, 3]));
        assert_eq!(frames, vec![Frame::Ack { tag: 1, multiple: true }, Frame::Ack { tag: 3, multiple: false }]);
    }

    #[test]
    fn filled_gap_acks_last_unsent_tag() {
        let mut book = AckBook::default();
        book.frames_for(&acks(&[1, 3, 4]));
        // 3 and 4 went out alone; 2 closes the gap and is the only one owed.
        let frames = book.frames_for(&acks(&[2]));
        assert_eq!(frames, vec![Frame::Ack { tag: 2, multiple: true }]);
        let frames = book.frames_for(&acks(&[5]));
        assert_eq!(frames, vec![Frame::Ack { tag: 5, multiple: true }]);
    }

    #[test]
    fn gap_filled_by_sent_tags_sends_nothing() {
        let mut book = AckBook::default();
        book.frames_for(&acks(&[2]));
        let frames = book.frames_for(&[(1, Settlement::Requeue)]);
        assert_eq!(frames, vec![Frame::Requeue { tag: 1 }]);
        assert_eq!(book.settled_through, 2);
        assert!(book.pending.is_empty());
    }

    #[test]
    fn nack_goes_before_the_ack_that_passes_it() {
        let mut book = AckBook::default();
        let frames = book.frames_for(&[(1, Settlement::Ack), (2, Settlement::Requeue), (3, Settlement::Ack)]);
        assert_eq!(frames, vec![Frame::Requeue { tag: 2 }, Frame::Ack { tag: 3, multiple: true }]);
    }

    #[test]
    fn multiple_ack_never_names_a_settled_tag() {
        let mut book = AckBook::default();
        let frames = book.frames_for(&[(1, Settlement::Ack), (2, Settlement::Requeue)]);
        assert_eq!(frames, vec![Frame::Requeue { tag: 2 }, Frame::Ack { tag: 1, multiple: true }]);
    }

    #[test]
    fn second_outcome_of_a_tag_is_ignored() {
        let mut book = AckBook::default();
        book.frames_for(&acks(&[1]));
        assert!(book.frames_for(&[(1, Settlement::Requeue)]).is_empty());
        book.frames_for(&acks(&[3]));
        assert!(book.frames_for(&acks(&[3])).is_empty());
    }

    #[test]
    fn abandoned_delivery_ends_coalescing() {
        let mut book = AckBook::default();
        book.frames_for(&acks(&[2, 4]));
        let frames = book.frames_for(&[(1, Settlement::Abandoned), (5, Settlement::Requeue), (3, Settlement::Ack)]);
        // 2 and 4 went out alone already; 3 may not be covered by a multiple
        // ack, which would settle the abandoned 1 too.
        assert_eq!(frames, vec![Frame::Requeue { tag: 5 }, Frame::Ack { tag: 3, multiple: false }]);
        let frames = book.frames_for(&acks(&[6, 7]));
        assert_eq!(frames, vec![Frame::Ack { tag: 6, multiple: false }, Frame::Ack { tag: 7, multiple: false }]);
        assert!(book.pending.is_empty());
    }

    #[test]
    fn every_tag_is_settled_exactly_once() {
        // Tags 1..=200 arrive in a scrambled order in batches of 7, tag 50
        // never settles, every 13th is requeued.
        let mut order: Vec<u64> = (1..=200).filter(|&tag| tag != 50).collect();
        for i in 0..order.len() {
            let j = (i * 37 + 11) % order.len();
            order.swap(i, j);
        }
        let mut book = AckBook::default();
        let mut unsettled: std::collections::BTreeSet<u64> = (1..=200).collect();
        let mut reported = std::collections::BTreeSet::new();
        for batch in order.chunks(7) {
            reported.extend(batch.iter().copied());
            let outcomes: Vec<_> = batch
                .iter()
                .map(|&tag| (tag, if tag % 13 == 0 { Settlement::Requeue } else { Settlement::Ack }))
                .collect();
            for frame in book.frames_for(&outcomes) {
                match frame {
                    Frame::Requeue { tag } | Frame::Ack { tag, multiple: false } => {
                        assert!(unsettled.remove(&tag), "tag {tag} settled twice");
                    }
                    Frame::Ack { tag, multiple: true } => {
                        assert!(unsettled.contains(&tag), "multiple ack names settled tag {tag}");
                        let covered: Vec<u64> = unsettled.range(..=tag).copied().collect();
                        for &covered_tag in &covered {
                            assert!(reported.contains(&covered_tag), "multiple ack {tag} covers {covered_tag}, still in flight");
                        }
                        for tag in covered {
                            unsettled.remove(&tag);
                        }
                    }
                }
            }
        }
        assert_eq!(unsettled.into_iter().collect::<Vec<_>>(), vec![50]);
    }
}
