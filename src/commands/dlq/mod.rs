//! `dlq list` and `dlq replay`: inspecting the dead letter queue, and moving
//! this service's dead letters back to the notify exchange.

mod letter;
mod list;
mod reader;
mod replay;

use std::process::ExitCode;

use clap::Subcommand;

pub use list::ListArgs;
pub use replay::ReplayArgs;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show the messages in the dead letter queue without removing any.
    ///
    /// The queue is `broker.queue_prefix` + `broker.dead_letter_queue`. For
    /// each message: its age (from `x-failed-at`), original routing key,
    /// failure kind and code, who dead-lettered it, the notification id and
    /// the first line of the reason. The messages are read unacknowledged
    /// and go back to the queue when the command ends, which keeps their
    /// order only approximately.
    List(ListArgs),
    /// Move this service's dead letters back to the notify exchange.
    ///
    /// Each matching message is published under its `x-original-routing-key`
    /// without the failure headers and with `x-retry-count` removed; body,
    /// properties and other headers stay unchanged. Only dead letters whose
    /// original routing key starts with `notify.channel.` are replayed,
    /// because every service of the stack shares the queue. Each message is
    /// published with a confirm and only then removed from the queue, so an
    /// interruption loses nothing: at worst one message is replayed twice,
    /// which the service's idempotency absorbs. A failed publish stops the
    /// run with exit status 1 and leaves that message in the queue. Messages
    /// that are not replayed stay in the queue, in approximately their order.
    Replay(ReplayArgs),
}

pub async fn run(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => list::run(args).await,
        DlqCommand::Replay(args) => replay::run(args).await,
    }
}
