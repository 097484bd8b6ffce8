//! `dlq list`: a table of the dead letters, none of them removed.

use std::process::ExitCode;

use chrono::Utc;
use clap::Args;
use notify_channels::ChannelsConfig;
use notify_core::config::Config;

use super::letter::DeadLetter;
use super::reader::DeadLetterReader;
use crate::commands::{broker, ConfigArg};

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Maximum number of messages to show, from the head of the queue.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

const COLUMNS: [&str; 6] = ["AGE", "ROUTING KEY", "KIND", "FAILED BY", "NOTIFICATION ID", "REASON"];

pub(super) async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let config: Config<ChannelsConfig> = Config::load(&args.config.config)?;
    let queue = format!("{}{}", config.broker.queue_prefix, config.broker.dead_letter_queue);
    let connection = broker::connect(&config.broker).await?;
    let mut reader = DeadLetterReader::open(&connection, &queue).await?;

    let now = Utc::now();
    let mut rows = Vec::new();
    let read = read_rows(&mut reader, args.limit, now, &mut rows).await;
    let total = reader.count();
    reader.close().await;
    broker::close(&connection).await;
    read?;

    if rows.is_empty() {
        println!("{queue} holds no messages");
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&rows);
    println!();
    println!("{} of {total} messages in {queue} shown; all of them stay in the queue", rows.len());
    Ok(ExitCode::SUCCESS)
}

async fn read_rows(
    reader: &mut DeadLetterReader,
    limit: u32,
    now: chrono::DateTime<Utc>,
    rows: &mut Vec<[String; 6]>,
) -> anyhow::Result<()> {
    while rows.len() < limit as usize {
        let Some(delivery) = reader.next().await? else {
            break;
        };
        let letter = DeadLetter::read(&delivery.properties, &delivery.data);
        rows.push([
            letter.age(now),
            letter.original_routing_key.clone().unwrap_or_else(|| "-".to_owned()),
            letter.kind_and_code(),
            letter.failed_by.clone().unwrap_or_else(|| "-".to_owned()),
            letter.notification_id.clone().unwrap_or_else(|| "-".to_owned()),
            letter.short_reason(),
        ]);
    }
    Ok(())
}

/// Prints the rows under [`COLUMNS`], each column as wide as its widest cell.
fn print_table(rows: &[[String; 6]]) {
    let mut widths = COLUMNS.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    println!("{}", line(COLUMNS));
    for row in rows {
        println!("{}", line(row.each_ref().map(String::as_str)));
    }
}
