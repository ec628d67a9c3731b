//! `ferry-load`: posts exactly N unique orders to a ferry-api over C connections and says how long
//! it took. The benchmark's loader where a count matters more than a duration (wrk runs for a time).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;

#[derive(Parser)]
#[command(name = "ferry-load", about = "Posts N unique orders to a ferry-api")]
struct Cli {
    /// The api, e.g. http://127.0.0.1:8001
    #[arg(long)]
    api: String,
    /// Orders to post.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// The tenant the orders are for.
    #[arg(long, default_value = "Bench Garage")]
    workshop: String,
    /// Prefix of the uniqueids (keep runs apart).
    #[arg(long, default_value = "load")]
    prefix: String,
    /// The API key, if the api needs one.
    #[arg(long, env = "FERRY_API_KEY")]
    key: Option<String>,
}

// One thread: on the bench's two cores the loader's CPU is taken from what it measures, and
// tokio's multi-thread scheduler cost 26 µs of CPU a request here against 15 µs on one thread.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = cli.key.as_deref().and_then(|k| k.parse().ok()) {
        headers.insert("x-api-key", key);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cli.conns {
        let (http, next, failed) = (http.clone(), next.clone(), failed.clone());
        let (url, workshop, prefix, n) = (
            format!("{}/create", cli.api),
            cli.workshop.clone(),
            cli.prefix.clone(),
            cli.n,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let body = format!(
                    r#"{{"uniqueid":"{prefix}-{i}","workshop":"{workshop}","worksheet":"558","product_nr":"10","amount":5}}"#
                );
                let ok = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader task");
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "posted {} orders in {secs:.2} s ({:.0}/s), {failed} failed",
        cli.n,
        cli.n as f64 / secs
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
