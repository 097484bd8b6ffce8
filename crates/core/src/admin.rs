//! The admin HTTP listener: `/healthz` (the process is alive), `/readyz`
//! (connected to the broker and consuming every channel queue, templates
//! loaded) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::{Metrics, CONTENT_TYPE};

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

/// The admin routes, for serving or testing.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: not connected to the broker or not consuming\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.encode())
}

/// Binds `address` and serves the admin routes until `shutdown` is cancelled.
///
/// # Errors
///
/// Returns the error of binding the address.
pub async fn serve(address: SocketAddr, state: AdminState, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    info!(address = %listener.local_addr()?, "admin listener started");
    tokio::spawn(async move {
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(err) = server.await {
            warn!(error = %err, "admin listener stopped with an error");
        }
    });
    Ok(())
}
