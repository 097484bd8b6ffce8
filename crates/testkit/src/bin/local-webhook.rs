//! A webhook receiver for local development: accepts every POST with
//! `204 No Content` and prints its signature headers and body.
//!
//! Usage: `local-webhook [ADDRESS]`, default `127.0.0.1:8025`.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Largest request body printed; longer bodies are read and cut.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8025".to_owned());
    let listener = TcpListener::bind(&address).await?;
    println!("webhook receiver listening on http://{}/", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(err) = serve(stream).await {
                eprintln!("connection from {peer} failed: {err}");
            }
        });
    }
}

async fn serve(stream: TcpStream) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut shown_headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    content_length = value.trim().parse().unwrap_or(0);
                }
                if name.starts_with("webhook-") || name == "content-type" || name == "user-agent" {
                    shown_headers.push(format!("{name}: {}", value.trim()));
                }
            }
        }
        let mut body = vec![0; content_length.min(MAX_BODY_BYTES)];
        reader.read_exact(&mut body).await?;
        if content_length > body.len() {
            tokio::io::copy(&mut (&mut reader).take((content_length - body.len()) as u64), &mut tokio::io::sink()).await?;
        }
        println!("--- {}", request_line.trim_end());
        for header in &shown_headers {
            println!("{header}");
        }
        println!("\n{}\n", String::from_utf8_lossy(&body));
        writer.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await?;
    }
}
