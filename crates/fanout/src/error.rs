//! Errors of the fan-out stage.

use std::path::PathBuf;

/// A routes file that cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read the routes file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TOML in the routes file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid rule {rule} in the routes file {path}: {reason}")]
    Invalid { path: String, rule: usize, reason: String },
}

/// A failed operation of the contacts store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("fanout.database_url must start with sqlite:// or postgres://, got {0:?}")]
    UnsupportedUrl(String),
    #[error("cannot connect to the contacts database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} of the contacts database failed: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("contacts database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("invalid value {value:?} in column {column} of the contacts database")]
    Corrupt { column: &'static str, value: String },
}

/// An error that stops the stage from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Routes(#[from] RoutesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("fanout.api_listen {address:?} is not an IP address and port such as 127.0.0.1:9465")]
    InvalidListen { address: String },
    #[error("cannot listen on fanout.api_listen {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fanout.queue must be 1 to 200 bytes long")]
    InvalidQueue,
}
