//! A TCP proxy in front of the local broker that can go silent, as a broker
//! that is restarting or a broken network path can: the client's bytes still
//! arrive, but no reply comes back. It can also cut a connection outright.
//!
//! The proxy reads the broker's side frame by frame (AMQP 0-9-1: a 7-byte
//! header whose last 4 bytes give the payload size, the payload, then one
//! end byte), so that it can let exactly the handshake through and no more.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BROKER_ADDRESS: &str = "127.0.0.1:5672";

/// Frames the broker sends before a connection is usable: `connection.start`,
/// `connection.tune` and `connection.open-ok`.
const HANDSHAKE_FRAMES: usize = 3;

/// Controls of one proxied connection.
#[derive(Clone)]
struct Link {
    silence: CancellationToken,
    cut: CancellationToken,
}

#[derive(Default)]
struct Shared {
    /// Broker frames that new connections get before silence; `None`
    /// passes every frame.
    frame_limit: Mutex<Option<usize>>,
    /// Every accepted connection, in the order the clients opened them.
    links: Mutex<Vec<Link>>,
}

/// A listening proxy; it stops and cuts every connection when dropped.
pub struct BrokerProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

impl BrokerProxy {
    pub async fn start() -> BrokerProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accepting = tokio::spawn(accept(listener, Arc::clone(&shared)));
        BrokerProxy { address, shared, accepting }
    }

    /// Returns the AMQP URL that reaches the broker through this proxy.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address)
    }

    /// From now on, new connections get the broker's handshake and then
    /// silence; with `false`, they are forwarded whole again.
    pub fn answer_handshake_only(&self, handshake_only: bool) {
        *self.shared.frame_limit.lock().unwrap() = handshake_only.then_some(HANDSHAKE_FRAMES);
    }

    /// From now on, new connections get no frame at all, so that connecting
    /// never finishes.
    pub fn answer_nothing(&self) {
        *self.shared.frame_limit.lock().unwrap() = Some(0);
    }

    /// Counts the connections clients have opened through the proxy, closed
    /// ones included.
    pub fn connection_count(&self) -> usize {
        self.shared.links.lock().unwrap().len()
    }

    /// Stops passing the broker's replies on the `index`th connection; the
    /// client's own bytes still reach the broker.
    pub fn silence(&self, index: usize) {
        self.link(index).silence.cancel();
    }

    /// Closes both sides of the `index`th connection.
    pub fn cut(&self, index: usize) {
        self.link(index).cut.cancel();
    }

    fn link(&self, index: usize) -> Link {
        self.shared.links.lock().unwrap()[index].clone()
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        for link in self.shared.links.lock().unwrap().iter() {
            link.cut.cancel();
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(broker) = TcpStream::connect(BROKER_ADDRESS).await else {
            continue;
        };
        // Frames pass one at a time; without this, Nagle's algorithm would
        // hold each small one back for the peer's delayed ACK.
        if client.set_nodelay(true).is_err() || broker.set_nodelay(true).is_err() {
            continue;
        }
        let link = Link { silence: CancellationToken::new(), cut: CancellationToken::new() };
        let frame_limit = *shared.frame_limit.lock().unwrap();
        tokio::spawn(relay(client, broker, frame_limit, link.clone()));
        shared.links.lock().unwrap().push(link);
    }
}

/// Relays one connection until either side closes it or it is cut.
async fn relay(client: TcpStream, broker: TcpStream, frame_limit: Option<usize>, link: Link) {
    let (mut client_reader, mut client_writer) = client.into_split();
    let (mut broker_reader, mut broker_writer) = broker.into_split();
    tokio::select! {
        () = link.cut.cancelled() => {}
        _ = tokio::io::copy(&mut client_reader, &mut broker_writer) => {}
        _ = relay_frames(&mut broker_reader, &mut client_writer, frame_limit, &link.silence) => {}
    }
}

/// Passes the broker's frames to the client until `frame_limit` frames have
/// passed or `silence` is cancelled. After that, the connection stays open
/// and no more frames pass, except one whose header was already read.
async fn relay_frames(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    frame_limit: Option<usize>,
    silence: &CancellationToken,
) -> std::io::Result<()> {
    let mut passed = 0;
    loop {
        if silence.is_cancelled() || frame_limit.is_some_and(|limit| passed >= limit) {
            std::future::pending::<()>().await;
        }
        let mut header = [0u8; 7];
        tokio::select! {
            read = from.read_exact(&mut header) => read?,
            // A partly read header is dropped, because nothing passes after it.
            () = silence.cancelled() => continue,
        };
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        // The header, the payload and the frame-end byte.
        let mut frame = vec![0u8; header.len() + size + 1];
        frame[..header.len()].copy_from_slice(&header);
        from.read_exact(&mut frame[header.len()..]).await?;
        to.write_all(&frame).await?;
        passed += 1;
    }
}
