//! Faults that change the whole broker: a memory alarm that blocks every
//! publisher, and a restart of the broker application. They run in a test
//! binary of their own, because cargo runs test binaries one at a time and
//! these must not disturb the tests of `tests/it`, which run in parallel.
//! Within this binary, the tests take turns: one at a time locks the broker.

#[allow(dead_code)]
#[path = "../it/utils/mod.rs"]
mod utils;

mod alarm;
mod restart;

/// Held by each test for its whole run.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
