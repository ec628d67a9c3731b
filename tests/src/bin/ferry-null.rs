//! The benchmark's baselines: an actix-web server that reads each request's body and answers 200
//! with a tiny envelope, doing nothing else. `scripts/bench` runs it beside ferry-api with the same
//! number of actix workers, so the ratio between the two is what durability costs. (It reads the
//! body, as ferry-api must: a baseline that skips it measured three times as fast and flattered
//! every ratio.)
//!
//! With `--journal FILE` it is the floor of durable intake on this HTTP stack and disk instead:
//! each body is written to FILE (a line each) by one writer thread, which gathers what arrived
//! while it last wrote, and is answered only after the `fdatasync` that covers it (group commit, as ferry-api's
//! writer does, with nothing else: no parsing, no index, no state). No durable server built on
//! actix-web here can answer faster; ferry-api's distance from it is Ferry's own work.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use tokio::sync::oneshot;

#[derive(Parser)]
#[command(
    name = "ferry-null",
    about = "A do-nothing actix-web server that reads the body and answers 200 (benchmark baseline); \
             with --journal, one that first writes the body to a journal file and syncs it (the \
             floor of durable intake)"
)]
struct Cli {
    /// Port to listen on (on 127.0.0.1).
    #[arg(long)]
    port: u16,
    /// actix-web worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Write each body to this file and answer after its `fdatasync` (the file is created or
    /// truncated, filled with 64 MiB of zeros, then written from its start round and round).
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// A body to write, and where to say it is on disk.
type Append = (web::Bytes, oneshot::Sender<()>);

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let journal = match &cli.journal {
        Some(path) => Some(spawn_writer(File::create(path)?)?),
        None => None,
    };
    HttpServer::new(move || {
        let journal = journal.clone();
        App::new().default_service(web::to(move |body: web::Bytes| {
            let journal = journal.clone();
            async move {
                // The body is read (and its length used) like ferry-api's, not left on the socket.
                let message = if body.is_empty() {
                    "empty"
                } else {
                    "job placed"
                };
                if let Some(journal) = journal {
                    let (done, synced) = oneshot::channel();
                    if journal.send((body, done)).is_err() || synced.await.is_err() {
                        return HttpResponse::InternalServerError().finish();
                    }
                }
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(format!(
                        r#"{{"success":true,"message":"{message}","data":{{}}}}"#
                    ))
            }
        }))
    })
    .workers(cli.workers)
    .bind(("127.0.0.1", cli.port))?
    .run()
    .await
}

/// The journal's size: filled with zeros first and then written round and round, so that a sync
/// has only the written pages to flush, never the file's size or its blocks (ferry-api's journal
/// is kept the same way).
const JOURNAL_BYTES: u64 = 64 << 20;

/// The writer thread: takes one body (waiting), then every body already queued, writes them
/// with one write, syncs, and answers them all. It waits for the first body as ferry-api's
/// writer waits for a command (`next` in its `store/writer.rs`): while bodies stream in it
/// looks for the next one for a moment before it sleeps, so that the floor stays a floor.
fn spawn_writer(mut file: File) -> std::io::Result<mpsc::Sender<Append>> {
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..JOURNAL_BYTES / zeros.len() as u64 {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    let (tx, rx) = mpsc::channel::<Append>();
    std::thread::Builder::new()
        .name("null-journal".into())
        .spawn(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut waiting = Vec::new();
            let mut at = 0u64;
            let mut streak = 0u8;
            while let Ok(first) = next(&rx, &mut streak) {
                waiting.push(first);
                waiting.extend(rx.try_iter());
                buf.clear();
                for (body, _) in &waiting {
                    buf.extend_from_slice(body);
                    buf.push(b'\n');
                }
                if at + buf.len() as u64 > JOURNAL_BYTES {
                    at = 0;
                }
                if file
                    .write_all_at(&buf, at)
                    .and_then(|()| file.sync_data())
                    .is_err()
                {
                    eprintln!("ferry-null: the journal cannot be written; stopping");
                    return;
                }
                at += buf.len() as u64;
                for (_, done) in waiting.drain(..) {
                    let _ = done.send(());
                }
            }
        })?;
    Ok(tx)
}

/// The next body: after three that each came within 150 µs of the writer asking, it looks for
/// the next for up to 150 µs, yielding between looks, before it sleeps on the channel.
fn next<T>(rx: &mpsc::Receiver<T>, streak: &mut u8) -> Result<T, mpsc::RecvError> {
    const SPIN: Duration = Duration::from_micros(150);
    let start = Instant::now();
    while *streak >= 3 && start.elapsed() < SPIN {
        match rx.try_recv() {
            Ok(item) => return Ok(item),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    let item = rx.recv();
    *streak = match start.elapsed() < SPIN {
        true => streak.saturating_add(1),
        false => 0,
    };
    item
}
