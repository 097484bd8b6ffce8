//! The broker's flow control: under a memory or disk alarm RabbitMQ sends
//! `connection.blocked` to publishing connections and stops reading from
//! them until the alarm clears. A publish then neither fails nor confirms.
//! [`FlowControl`] follows those notices so that publishers wait for the
//! broker instead of timing out and tearing down a healthy session.

use futures_util::StreamExt;
use lapin::{Connection, Event};
use tokio::sync::watch;
use tracing::{info, warn};

/// Whether the broker blocks a connection, and how many times it has so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowState {
    pub blocked: bool,
    /// Count of `connection.blocked` notices, so that a wait can tell
    /// whether a block began and ended while it ran.
    pub blocks: u64,
}

/// The flow state of one connection, shared by every publisher on it.
#[derive(Debug, Clone)]
pub struct FlowControl {
    state: watch::Receiver<FlowState>,
}

impl FlowControl {
    /// Follows the flow notices of `connection` until every clone of the
    /// returned handle is dropped.
    pub fn follow(connection: &Connection) -> FlowControl {
        let initial = FlowState { blocked: connection.status().blocked(), blocks: 0 };
        let (sender, state) = watch::channel(initial);
        let mut events = Box::pin(connection.events_listener());
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = sender.closed() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Event::ConnectionBlocked(reason)) => {
                        warn!(reason = %reason, "the broker blocked publishing; deliveries wait until it unblocks");
                        sender.send_modify(|state| {
                            state.blocked = true;
                            state.blocks += 1;
                        });
                    }
                    Some(Event::ConnectionUnblocked) => {
                        info!("the broker unblocked publishing");
                        sender.send_modify(|state| state.blocked = false);
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
        FlowControl { state }
    }

    pub fn state(&self) -> FlowState {
        *self.state.borrow()
    }

    /// Waits for the next change of state and returns it, or `None` once
    /// the connection's notices have ended.
    pub async fn next_state(&mut self) -> Option<FlowState> {
        self.state.changed().await.ok()?;
        Some(*self.state.borrow_and_update())
    }

    /// Returns at once unless the broker blocks the connection; then waits
    /// until it unblocks or the connection's notices end.
    pub async fn unblocked_now(&self) {
        // Every publish passes here, so the usual case costs one read.
        if !self.state.borrow().blocked {
            return;
        }
        let mut state = self.state.clone();
        // An error means the follower stopped: no notice will ever come, so
        // waiting longer could only hang.
        let _ = state.wait_for(|state| !state.blocked).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unblocked_connection_never_waits() {
        let (_sender, state) = watch::channel(FlowState::default());
        let flow = FlowControl { state };
        flow.unblocked_now().await;
        assert_eq!(flow.state(), FlowState::default());
    }

    #[tokio::test]
    async fn wait_ends_when_unblocked() {
        let (sender, state) = watch::channel(FlowState { blocked: true, blocks: 1 });
        let flow = FlowControl { state };
        let waiting = tokio::spawn({
            let flow = flow.clone();
            async move { flow.unblocked_now().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a blocked connection must hold the publisher back");
        sender.send_modify(|state| state.blocked = false);
        waiting.await.unwrap();
        assert_eq!(flow.state().blocks, 1);
    }
}
