//! The core of flatrender-notify.
//!
//! A dispatch message travels through these parts, in order:
//!
//! - [`envelope`] and [`headers`] parse and validate the message;
//! - [`templates`] renders it into [`content::Content`] for its channel;
//! - a [`channel::Channel`] plugin, looked up in the [`channel::ChannelRegistry`],
//!   delivers it and returns a [`channel::Receipt`] or a classified
//!   [`error::DeliveryError`];
//! - the [`dispatcher`] decides what follows: an outcome event from the
//!   [`publisher`], a delayed retry through the queues of [`topology`] on the
//!   schedule of [`retry`], or a dead letter; and only then acks.

pub mod admin;
pub mod breaker;
pub mod channel;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod config;
pub mod connection;
pub mod content;
pub mod dispatcher;
pub mod envelope;
pub mod error;
pub mod events;
pub mod flow_control;
pub mod headers;
pub mod idempotency;
pub mod metrics;
pub mod publisher;
pub mod rate_limit;
pub mod recipient;
pub mod retry;
pub mod service;
pub mod templates;
pub mod topology;

pub use channel::{Channel, ChannelKind, ChannelRegistry, Notification, Receipt};
pub use content::{Content, EmailContent, ParseMode};
pub use error::{DeliveryError, FailureKind, Retryability};
pub use recipient::{ChatId, PushPlatform, Recipient};
pub use templates::TemplateStore;
