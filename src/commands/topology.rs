//! `topology declare`: declares the exchanges, queues and bindings that
//! `serve` declares at start-up, then exits.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use notify_channels::ChannelsConfig;
use notify_core::config::Config;
use notify_core::retry::{tier_label, RetryPolicy};
use notify_core::topology::Topology;

use super::broker;
use super::ConfigArg;

#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Declare the exchanges, queues and bindings for the enabled channels.
    ///
    /// Declares the events, notify and dead letter exchanges, the dead
    /// letter queue, and the queue and retry delay queues of every channel
    /// enabled in the configuration, as `serve` does at start-up. Declaring
    /// what already exists with the same arguments changes nothing.
    Declare {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(command: TopologyCommand) -> anyhow::Result<ExitCode> {
    let TopologyCommand::Declare { config: config_arg } = command;
    let config: Config<ChannelsConfig> = Config::load(&config_arg.config)?;
    let policy = RetryPolicy::from_config(&config.retry)?;
    let channels = config.channels.enabled();
    let topology = Topology::new(&config.broker, channels.clone(), policy.tiers());

    let connection = broker::connect(&config.broker).await?;
    let channel = connection.create_channel().await.context("cannot open a broker channel")?;
    topology
        .declare(&channel)
        .await
        .context("declaring the topology failed; a queue that exists with other arguments must be deleted first")?;
    broker::close(&connection).await;

    println!(
        "exchanges: {} (topic), {} (direct), {} (fanout)",
        topology.events_exchange(),
        topology.notify_exchange(),
        topology.dlq_exchange()
    );
    println!("dead letter queue: {}", topology.dead_letter_queue());
    if channels.is_empty() {
        println!("no channel is enabled in {}, so no channel queue was declared", config_arg.config.display());
    }
    let tiers: Vec<String> = policy.tiers().iter().map(|tier| tier_label(*tier)).collect();
    for kind in channels {
        println!("channel queue: {} (retry delay queues: {})", topology.channel_queue(kind), tiers.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
