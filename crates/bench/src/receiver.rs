//! A webhook receiver on 127.0.0.1 that responds 200 to every request, at
//! once or after a fixed delay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use tokio::task::JoinHandle;

#[derive(Clone)]
struct ReceiverState {
    delay: Duration,
    requests: Arc<AtomicUsize>,
}

/// The running receiver; stops when dropped.
pub struct WebhookReceiver {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listens on a free port of 127.0.0.1 and responds to each request after `delay`.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the port.
    pub async fn start(delay: Duration) -> anyhow::Result<WebhookReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the webhook receiver")?;
        let address = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let state = ReceiverState { delay, requests: Arc::clone(&requests) };
        let app = Router::new().fallback(receive).with_state(state);
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("the webhook receiver stopped: {err}");
            }
        });
        Ok(WebhookReceiver { address, requests, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/bench", self.address)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the whole body, so the connection stays reusable, and responds 200.
async fn receive(State(state): State<ReceiverState>, _body: Bytes) -> StatusCode {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    StatusCode::OK
}
