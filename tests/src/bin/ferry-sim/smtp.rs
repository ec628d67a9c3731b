//! A mail sink speaking just enough SMTP for lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT),
//! for the alert tests and the demo: `--smtp-port P`. A recipient whose address starts with
//! `bad` is refused for good (550), as a mail server refuses an unknown mailbox. `GET /_sim/mail`
//! lists what it took: `{"messages": [{"from", "to": [...], "data"}]}`.

use std::sync::Mutex;

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Sink {
    messages: Mutex<Vec<Value>>,
}

pub async fn listen(port: u16, sink: web::Data<Sink>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ferry-sim smtp listening on {}", listener.local_addr()?);
    loop {
        let (conn, _) = listener.accept().await?;
        let sink = sink.clone();
        actix_web::rt::spawn(async move {
            let _ = session(conn, sink).await;
        });
    }
}

async fn session(conn: tokio::net::TcpStream, sink: web::Data<Sink>) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 ferry-sim ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::<String>::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 ferry-sim\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&line[10..]);
            to.clear();
            b"250 2.1.0 Ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = address(&line[8..]);
            if rcpt.starts_with("bad") {
                b"550 5.1.1 <mailbox unavailable>: no such user here\r\n"
            } else {
                to.push(rcpt);
                b"250 2.1.5 Ok\r\n"
            }
        } else if upper == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push('\n');
            }
            if let Ok(mut m) = sink.messages.lock() {
                m.push(json!({ "from": from, "to": to, "data": data }));
            }
            b"250 2.0.0 Ok: queued\r\n"
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 2.0.0 Ok\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            b"502 5.5.2 Command not recognized\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

/// `<a@b>` (with any parameters after it) as `a@b`.
fn address(s: &str) -> String {
    let s = s.trim();
    s.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(s, |(a, _)| a)
        .to_string()
}

pub async fn mail(sink: web::Data<Sink>) -> HttpResponse {
    let messages = sink.messages.lock().map(|m| m.clone()).unwrap_or_default();
    HttpResponse::Ok().json(json!({ "messages": messages }))
}
