//! Integration tests: the real `flatrender-notify` binary against the real
//! RabbitMQ on 127.0.0.1:5672, wiremock as webhook receiver and the testkit
//! SMTP server as mail server. Each test declares its own exchanges and
//! queues under a unique prefix, so tests run in parallel.

mod utils;

mod admin;
mod channels;
mod cli_dlq;
mod cli_send;
mod cli_templates;
mod cli_topology;
mod dead_letters;
mod delivery;
mod email;
mod fanout;
mod faults;
mod instances;
mod lifecycle;
mod rate_limits;
mod reload;
mod retries;
mod silent_broker;
mod sms;
