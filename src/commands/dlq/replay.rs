//! `dlq replay`: moves matching dead letters back to the notify exchange,
//! each confirmed by the broker before it is acked in the dead letter queue.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use chrono::Utc;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use notify_channels::ChannelsConfig;
use notify_core::config::Config;
use notify_core::headers;
use notify_core::publisher::Publisher;
use notify_core::FailureKind;
use uuid::Uuid;

use super::letter::{DeadLetter, NOTIFY_ROUTING_KEY_PREFIX};
use super::reader::DeadLetterReader;
use crate::commands::{broker, ConfigArg};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Replay only dead letters with this failure kind (`x-failure-kind`),
    /// e.g. retries_exhausted or recipient_gone.
    #[arg(long, value_parser = parse_failure_kind)]
    pub kind: Option<FailureKind>,
    /// Replay only dead letters with this original routing key, e.g.
    /// notify.channel.webhook. It must start with `notify.channel.`.
    #[arg(long, value_parser = parse_routing_key)]
    pub routing_key: Option<String>,
    /// Replay only the dead letter of this notification (`data.notification_id` of the body).
    #[arg(long)]
    pub notification_id: Option<Uuid>,
    /// Maximum number of messages to replay; every matching message when absent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print the messages that would be replayed, and move none.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_failure_kind(value: &str) -> Result<FailureKind, String> {
    // Serde's error lists the valid kinds.
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|err| err.to_string())
}

fn parse_routing_key(value: &str) -> Result<String, String> {
    if value.len() > NOTIFY_ROUTING_KEY_PREFIX.len() && value.starts_with(NOTIFY_ROUTING_KEY_PREFIX) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "only this service's dead letters can be replayed, so the routing key must start with \
             {NOTIFY_ROUTING_KEY_PREFIX}, e.g. notify.channel.webhook"
        ))
    }
}

/// Criteria a dead letter must meet to be replayed.
struct Filter {
    kind: Option<FailureKind>,
    routing_key: Option<String>,
    notification_id: Option<Uuid>,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        let notification_id = letter.notification_id.as_deref().and_then(|id| Uuid::parse_str(id).ok());
        letter.is_from_notify()
            && self.kind.is_none_or(|kind| letter.kind.as_deref() == Some(kind.as_str()))
            && self.routing_key.as_deref().is_none_or(|key| letter.original_routing_key.as_deref() == Some(key))
            && self.notification_id.is_none_or(|id| notification_id == Some(id))
    }
}

/// Headers that mark a message as a dead letter or a retry. Replay removes
/// them, so the service treats the message as a first delivery.
const DEAD_LETTER_HEADERS: [&str; 7] = [
    headers::ORIGINAL_ROUTING_KEY,
    headers::FAILURE_KIND,
    headers::FAILURE_REASON,
    headers::FAILURE_CODE,
    headers::FAILED_AT,
    headers::FAILED_BY,
    headers::RETRY_COUNT,
];

/// Returns the dead letter's headers without [`DEAD_LETTER_HEADERS`]. All other headers stay.
fn replay_headers(properties: &BasicProperties) -> FieldTable {
    let mut kept = FieldTable::default();
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            if !DEAD_LETTER_HEADERS.contains(&name.as_str()) {
                kept.insert(name.clone(), value.clone());
            }
        }
    }
    kept
}

/// Counts of one run, and the error that stopped it.
#[derive(Default)]
struct Tally {
    read: u32,
    replayed: u32,
    skipped: u32,
    stopped_at_limit: bool,
    failure: Option<anyhow::Error>,
}

pub(super) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config: Config<ChannelsConfig> = Config::load(&args.config.config)?;
    let queue = format!("{}{}", config.broker.queue_prefix, config.broker.dead_letter_queue);
    let filter = Filter { kind: args.kind, routing_key: args.routing_key.clone(), notification_id: args.notification_id };
    let connection = broker::connect(&config.broker).await?;
    let publisher = Publisher::open(&connection, config.confirm_timeout()).await?;
    let mut reader = DeadLetterReader::open(&connection, &queue).await?;

    let total = reader.count();
    let progress = progress_bar(total);
    let replay = Replay {
        publisher: &publisher,
        exchange: &config.broker.exchanges.notify,
        filter: &filter,
        args: &args,
        progress: &progress,
    };
    let tally = replay.run(&mut reader).await;
    progress.finish_and_clear();
    reader.close().await;
    broker::close(&connection).await;

    print_summary(&tally, &args, &queue, total);
    match tally.failure {
        Some(err) => Err(err),
        None => Ok(ExitCode::SUCCESS),
    }
}

const PROGRESS_TEMPLATE: &str = "{wide_bar} {pos}/{len} dead letters read, {msg}";

/// Creates a progress bar on stderr while stdout is a terminal. The bar is
/// hidden otherwise, e.g. when the output goes to a file or a pipe.
fn progress_bar(total: u32) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::from(total));
    if let Ok(style) = ProgressStyle::with_template(PROGRESS_TEMPLATE) {
        bar.set_style(style);
    }
    bar
}

struct Replay<'a> {
    publisher: &'a Publisher,
    exchange: &'a str,
    filter: &'a Filter,
    args: &'a ReplayArgs,
    progress: &'a ProgressBar,
}

impl Replay<'_> {
    async fn run(&self, reader: &mut DeadLetterReader) -> Tally {
        let mut tally = Tally::default();
        let now = Utc::now();
        loop {
            if self.args.limit.is_some_and(|limit| tally.replayed >= limit) {
                tally.stopped_at_limit = true;
                break;
            }
            let delivery = match reader.next().await {
                Ok(Some(delivery)) => delivery,
                Ok(None) => break,
                Err(err) => {
                    tally.failure = Some(err);
                    break;
                }
            };
            tally.read += 1;
            self.progress.inc(1);

            let letter = DeadLetter::read(&delivery.properties, &delivery.data);
            // A message that does not match stays unacked until the reader
            // closes, which returns it to the queue.
            if !self.filter.matches(&letter) {
                tally.skipped += 1;
                continue;
            }
            if !self.args.dry_run {
                if let Err(err) = self.move_back(&delivery, &letter).await {
                    tally.failure = Some(err);
                    break;
                }
            }
            tally.replayed += 1;
            let verb = if self.args.dry_run { "would replay" } else { "replayed" };
            self.progress.suspend(|| println!("{verb} {}", describe(&letter, now)));
            self.progress.set_message(format!("{} {verb}, {} skipped", tally.replayed, tally.skipped));
        }
        tally
    }

    /// Publishes the message under its original routing key and, once the
    /// broker confirmed and routed it, acks it in the dead letter queue.
    async fn move_back(&self, delivery: &Delivery, letter: &DeadLetter) -> anyhow::Result<()> {
        let Some(routing_key) = letter.original_routing_key.as_deref() else {
            bail!("dead letter is missing the {} header", headers::ORIGINAL_ROUTING_KEY);
        };
        let properties = delivery.properties.clone().with_headers(replay_headers(&delivery.properties));
        self.publisher.publish(self.exchange, routing_key, true, &delivery.data, properties).await.map_err(|err| {
            anyhow!(
                "replay of {} stopped: {err}; that message stays in the dead letter queue. \
                 Check that the service declared the queue for {routing_key} (`flatrender-notify topology declare`)",
                letter.notification_id.as_deref().unwrap_or("a message without notification id")
            )
        })?;

        let removed = delivery.acker.ack(BasicAckOptions::default()).await;
        if !matches!(removed, Ok(true)) {
            let reason = match removed {
                Err(err) => err.to_string(),
                Ok(_) => "the channel closed".to_owned(),
            };
            bail!(
                "{} was replayed but not removed from the dead letter queue ({reason}); \
                 a second replay sends it again, which the service's idempotency absorbs",
                letter.notification_id.as_deref().unwrap_or("a message without notification id")
            );
        }
        Ok(())
    }
}

fn describe(letter: &DeadLetter, now: chrono::DateTime<Utc>) -> String {
    format!(
        "{} {} notification {} (dead-lettered {} ago)",
        letter.original_routing_key.as_deref().unwrap_or("-"),
        letter.kind_and_code(),
        letter.notification_id.as_deref().unwrap_or("-"),
        letter.age(now),
    )
}

fn print_summary(tally: &Tally, args: &ReplayArgs, queue: &str, total: u32) {
    let failed = u32::from(tally.failure.is_some());
    if args.dry_run {
        println!("dry run: would replay {}, skipped {}; nothing was moved", tally.replayed, tally.skipped);
    } else {
        println!("replayed {}, skipped {}, failed {failed}", tally.replayed, tally.skipped);
    }
    let unread = total.saturating_sub(tally.read);
    if tally.stopped_at_limit && unread > 0 {
        println!("stopped at --limit; {unread} of the {total} messages in {queue} were not read");
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, ShortString};

    use super::*;

    fn letter(routing_key: &str, kind: &str, notification_id: &str) -> DeadLetter {
        DeadLetter {
            original_routing_key: Some(routing_key.to_owned()),
            kind: Some(kind.to_owned()),
            notification_id: Some(notification_id.to_owned()),
            ..DeadLetter::default()
        }
    }

    #[test]
    fn filter_replays_only_notify_routing_keys() {
        let all = Filter { kind: None, routing_key: None, notification_id: None };
        let id = Uuid::new_v4().to_string();
        assert!(all.matches(&letter("notify.channel.email", "timeout", &id)));
        assert!(!all.matches(&letter("render.jobs", "timeout", &id)));
        assert!(!all.matches(&DeadLetter::default()));
    }

    #[test]
    fn filter_checks_every_given_field() {
        let id = Uuid::new_v4();
        let filter = Filter {
            kind: Some(FailureKind::RecipientGone),
            routing_key: Some("notify.channel.webhook".to_owned()),
            notification_id: Some(id),
        };
        let upper = id.to_string().to_uppercase();
        assert!(filter.matches(&letter("notify.channel.webhook", "recipient_gone", &upper)));
        assert!(!filter.matches(&letter("notify.channel.webhook", "timeout", &upper)));
        assert!(!filter.matches(&letter("notify.channel.email", "recipient_gone", &upper)));
        assert!(!filter.matches(&letter("notify.channel.webhook", "recipient_gone", &Uuid::new_v4().to_string())));
    }

    #[test]
    fn replay_headers_drop_failure_and_retry_headers_only() {
        let mut table = FieldTable::default();
        for name in DEAD_LETTER_HEADERS {
            table.insert(ShortString::from(name), headers::text("x"));
        }
        table.insert(ShortString::from(headers::TRACE_ID), headers::text("trace-1"));
        table.insert(ShortString::from(headers::MAX_RETRIES), AMQPValue::LongInt(5));
        let kept = replay_headers(&BasicProperties::default().with_headers(table));
        assert_eq!(kept.inner().len(), 2);
        assert!(kept.contains_key(headers::TRACE_ID));
        assert!(kept.contains_key(headers::MAX_RETRIES));
    }

    #[test]
    fn progress_template_is_valid() {
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
    }

    #[test]
    fn arguments_are_validated() {
        assert_eq!(parse_failure_kind("retries_exhausted").unwrap(), FailureKind::RetriesExhausted);
        assert!(parse_failure_kind("retries-exhausted").unwrap_err().contains("retries_exhausted"));
        assert!(parse_routing_key("notify.channel.sms").is_ok());
        assert!(parse_routing_key("render.jobs").is_err());
        assert!(parse_routing_key("notify.channel.").is_err());
    }
}
