//! Prometheus metrics of the dispatcher, exposed by [`crate::admin`] at
//! `/metrics` in the Prometheus text format.
//!
//! Each counter moves at the same place as the log line that reports the
//! same event, so the two cannot drift apart.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::channel::ChannelKind;
use crate::error::FailureKind;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    channel: &'static str,
    kind: &'static str,
}

type HistogramFamily = Family<ChannelLabels, Histogram, fn() -> Histogram>;

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    consumed: Family<ChannelLabels, Counter>,
    delivered: Family<ChannelLabels, Counter>,
    failed: Family<KindLabels, Counter>,
    retried: Family<KindLabels, Counter>,
    dead_lettered: Family<KindLabels, Counter>,
    idempotency_hits: Family<ChannelLabels, Counter>,
    in_flight: Family<ChannelLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    delivery_latency: HistogramFamily,
    provider_latency: HistogramFamily,
    broker_connected: Gauge<i64, std::sync::atomic::AtomicI64>,
    broker_blocked: Gauge<i64, std::sync::atomic::AtomicI64>,
    rate_limited: Family<ChannelLabels, Counter>,
    breakers_open: Gauge<i64, std::sync::atomic::AtomicI64>,
    reconnects: Counter<u64, AtomicU64>,
}

/// Buckets from 1 ms to about 65 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("notify");
        let metrics = Metrics {
            consumed: Family::default(),
            delivered: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            idempotency_hits: Family::default(),
            in_flight: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            provider_latency: Family::new_with_constructor(latency_histogram),
            broker_connected: Gauge::default(),
            broker_blocked: Gauge::default(),
            rate_limited: Family::default(),
            breakers_open: Gauge::default(),
            reconnects: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("messages_consumed", "Dispatch messages taken from a channel queue", metrics.consumed.clone());
        registry.register("notifications_delivered", "Notifications a provider accepted", metrics.delivered.clone());
        registry.register("notifications_failed", "Notifications that will not be delivered, by failure kind", metrics.failed.clone());
        registry.register("retries_scheduled", "Delivery attempts that failed transiently and were scheduled again", metrics.retried.clone());
        registry.register("messages_dead_lettered", "Messages published to the dead-letter exchange, by failure kind", metrics.dead_lettered.clone());
        registry.register("idempotency_hits", "Redelivered messages whose notification was already sent", metrics.idempotency_hits.clone());
        registry.register("messages_in_flight", "Messages being processed now", metrics.in_flight.clone());
        registry.register(
            "delivery_latency_seconds",
            "Time from a request's event_time to its delivery",
            metrics.delivery_latency.clone(),
        );
        registry.register("provider_call_seconds", "Duration of one call to a channel plugin", metrics.provider_latency.clone());
        registry.register("broker_connected", "1 while connected to the broker and consuming", metrics.broker_connected.clone());
        registry.register(
            "broker_blocked",
            "1 while the broker blocks publishing under a memory or disk alarm",
            metrics.broker_blocked.clone(),
        );
        registry.register(
            "rate_limited",
            "Sends held back by a provider rate limit, in their slot or through a delay queue",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "circuit_breakers_open",
            "Provider endpoints whose circuit breaker is open or probing",
            metrics.breakers_open.clone(),
        );
        registry.register("broker_reconnects", "Broker sessions lost and started again", metrics.reconnects.clone());
        Metrics { registry, ..metrics }
    }

    pub fn consumed(&self, channel: ChannelKind) {
        self.consumed.get_or_create(&labels(channel)).inc();
    }

    /// Counts a delivery; `latency` runs from the request's `event_time`.
    pub fn delivered(&self, channel: ChannelKind, latency: Option<Duration>) {
        self.delivered.get_or_create(&labels(channel)).inc();
        if let Some(latency) = latency {
            self.delivery_latency.get_or_create(&labels(channel)).observe(latency.as_secs_f64());
        }
    }

    pub fn failed(&self, channel: ChannelKind, kind: FailureKind) {
        self.failed.get_or_create(&kind_labels(channel, kind)).inc();
    }

    pub fn retried(&self, channel: ChannelKind, kind: FailureKind) {
        self.retried.get_or_create(&kind_labels(channel, kind)).inc();
    }

    pub fn dead_lettered(&self, channel: ChannelKind, kind: FailureKind) {
        self.dead_lettered.get_or_create(&kind_labels(channel, kind)).inc();
    }

    pub fn idempotency_hit(&self, channel: ChannelKind) {
        self.idempotency_hits.get_or_create(&labels(channel)).inc();
    }

    pub fn provider_call(&self, channel: ChannelKind, duration: Duration) {
        self.provider_latency.get_or_create(&labels(channel)).observe(duration.as_secs_f64());
    }

    /// Counts a message as in flight until the guard is dropped.
    pub fn in_flight(&self, channel: ChannelKind) -> InFlight {
        let gauge = self.in_flight.get_or_create(&labels(channel)).clone();
        gauge.inc();
        InFlight(gauge)
    }

    pub fn broker_connected(&self, connected: bool) {
        self.broker_connected.set(i64::from(connected));
    }

    pub fn broker_blocked(&self, blocked: bool) {
        self.broker_blocked.set(i64::from(blocked));
    }

    pub fn rate_limited(&self, channel: ChannelKind) {
        self.rate_limited.get_or_create(&labels(channel)).inc();
    }

    pub fn circuit_breakers_open(&self, count: usize) {
        self.breakers_open.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Encodes the metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an empty page beats a panic.
        if prometheus_text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn labels(channel: ChannelKind) -> ChannelLabels {
    ChannelLabels { channel: channel.as_str() }
}

fn kind_labels(channel: ChannelKind, kind: FailureKind) -> KindLabels {
    KindLabels { channel: channel.as_str(), kind: kind.as_str() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_labels() {
        let metrics = Metrics::new();
        metrics.delivered(ChannelKind::Email, Some(Duration::from_millis(20)));
        metrics.dead_lettered(ChannelKind::Webhook, FailureKind::InvalidMessage);
        let text = metrics.encode();
        assert!(text.contains("notify_notifications_delivered_total{channel=\"email\"} 1"), "{text}");
        assert!(
            text.contains("notify_messages_dead_lettered_total{channel=\"webhook\",kind=\"invalid_message\"} 1"),
            "{text}"
        );
        assert!(text.contains("notify_delivery_latency_seconds_count{channel=\"email\"} 1"), "{text}");
    }

    #[test]
    fn in_flight_gauge_follows_guards() {
        let metrics = Metrics::new();
        let first = metrics.in_flight(ChannelKind::Sms);
        let second = metrics.in_flight(ChannelKind::Sms);
        assert!(metrics.encode().contains("notify_messages_in_flight{channel=\"sms\"} 2"));
        drop(first);
        drop(second);
        assert!(metrics.encode().contains("notify_messages_in_flight{channel=\"sms\"} 0"));
    }
}
