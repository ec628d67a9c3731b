//! `ferryctl fleet serve`: one page listing every tenant of a tenants file with its health,
//! refreshed every two seconds, each linking to its own dashboard. A small HTTP/1.1 server on
//! loopback with two paths (`/`, the page; `/fleet.json`, the survey), enough for a person's
//! browser; each answer closes its connection, and a connection that says nothing for 30 s is
//! dropped.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::fleet::{Fleet, SURVEY, survey};

const PAGE: &str = include_str!("fleet.html");

pub async fn serve(fleet: Fleet, key: Option<String>, port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("ferryctl fleet serve listening on {addr}: open http://{addr}/");
    let shared = (fleet, key);
    // One connection at a time: a person's browser asks every two seconds.
    loop {
        let (mut conn, _) = listener.accept().await?;
        let shared = &shared;
        let answered = tokio::time::timeout(std::time::Duration::from_secs(30), async move {
            let mut buf = vec![0u8; 8192];
            let mut read = 0;
            // The request line and headers; a GET has no body.
            while read < buf.len() {
                match conn.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
                if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..read]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, kind, body) = match (method, path) {
                ("GET", "/") => ("200 OK", "text/html; charset=utf-8", PAGE.to_string()),
                ("GET", "/fleet.json") => {
                    let (fleet, key) = shared;
                    let rows = survey(fleet, key.as_deref()).await;
                    let tenants: Vec<serde_json::Value> = rows
                        .iter()
                        .zip(&fleet.tenants)
                        .map(|(row, t)| {
                            let mut o: serde_json::Map<String, serde_json::Value> = SURVEY
                                .iter()
                                .zip(row.iter())
                                .map(|(k, v)| {
                                    (k.to_lowercase().replace(' ', "_"), v.clone().into())
                                })
                                .collect();
                            o.insert(
                                "dashboard".into(),
                                format!("http://127.0.0.1:{}/", t.port).into(),
                            );
                            o.into()
                        })
                        .collect();
                    let body = serde_json::json!({ "tenants": tenants }).to_string();
                    ("200 OK", "application/json", body)
                }
                ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET\n".to_string(),
                ),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
                 cache-control: no-store\r\nx-content-type-options: nosniff\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
        let _ = answered.await;
    }
}
