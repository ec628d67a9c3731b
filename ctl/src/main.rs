//! `ferryctl`: parse the command line and run one command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferry_ctl::client::Api;
use ferry_ctl::{fleet, table};
use ferry_shared::answer::{Cleared, QueuePage};
use ferry_shared::job::JobView;
use serde::de::IgnoredAny;

#[derive(Parser)]
#[command(
    name = "ferryctl",
    version,
    about = "Run a fleet of Ferry tenants, or operate one tenant's api.",
    after_help = "Examples:\n  ferryctl fleet up tenants.toml\n  ferryctl fleet status tenants.toml\n  \
ferryctl fleet serve tenants.toml --port 8000\n  \
ferryctl --api http://127.0.0.1:8001 queue --type error\n  \
ferryctl --api http://127.0.0.1:8001 retry 01a20995-4339-75e8-964d-803da9537551\n  \
ferryctl --api http://127.0.0.1:8001 alerts test\n\n\
The API key comes from --key or FERRY_API_KEY."
)]
struct Cli {
    /// One tenant's api, for the commands other than `fleet`.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8001",
        env = "FERRY_API_URL"
    )]
    api: String,
    /// Its API key.
    #[arg(long, global = true, env = "FERRY_API_KEY", hide_env_values = true)]
    key: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start, stop or survey an api+worker pair for every active tenant of a tenants file.
    Fleet {
        /// `serve` answers a page listing every tenant's health, refreshed live, each linking to
        /// its dashboard.
        #[arg(value_parser = ["up", "down", "status", "serve"])]
        action: String,
        /// The tenants file (name, port, target, active per tenant).
        tenants: PathBuf,
        /// Where ferry-api and ferry-worker are [default: beside ferryctl].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// `serve`: the port on 127.0.0.1 (0 picks a free one; the address is printed).
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
    /// Jobs waiting or in flight (or in the given statuses), as a table.
    Queue {
        /// placed, processing, created, error, cleared (comma-separated).
        #[arg(long)]
        status: Option<String>,
        /// task or error.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Text to find.
        #[arg(long)]
        q: Option<String>,
    },
    /// Where one job stands, by its uniqueid (or, with --booking, its bookId).
    Status {
        /// The uniqueid, or the bookId.
        #[arg(value_name = "KEY")]
        job_key: String,
        /// The key is a booking's bookId.
        #[arg(long)]
        booking: bool,
    },
    /// Put a job in error back in the queue.
    Retry { job_id: String },
    /// Clear the jobs waiting in the queue.
    Clear,
    /// Let the worker lease again.
    StartWorker,
    /// Let the worker finish what it holds and lease nothing more.
    StopWorker,
    /// Stop the tenant's api and worker gracefully.
    Kill,
    /// `test`: mail a test message to the tenant's alert addresses and say whether each copy
    /// went; `list`: every alert and what became of each copy.
    Alerts {
        #[arg(value_parser = ["test", "list"])]
        action: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("ferryctl: {e:#}");
        std::process::exit(1);
    }
}

/// `ferryctl alerts test|list`.
async fn alerts(api: &Api, action: &str) -> anyhow::Result<()> {
    let copies = |alert: &serde_json::Value| -> Vec<Vec<String>> {
        alert["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                vec![s("to"), s("status"), r["attempts"].to_string(), s("answer")]
            })
            .collect()
    };
    if action == "list" {
        let data: serde_json::Value = api.get("/alerts").await?;
        let mut rows = Vec::new();
        for a in data["alerts"].as_array().into_iter().flatten() {
            let when = a["created_ms"]
                .as_i64()
                .map(ferry_shared::rfc3339)
                .unwrap_or_default();
            for c in copies(a) {
                let mut row = vec![when.clone(), a["subject"].as_str().unwrap_or("").into()];
                row.extend(c);
                rows.push(row);
            }
        }
        let header = ["CREATED", "SUBJECT", "TO", "STATUS", "ATTEMPTS", "ANSWER"];
        println!("{}", table::render(&header, &rows));
        return Ok(());
    }
    let queued: serde_json::Value = api.post("/alerts/test").await?;
    let id = queued["id"].as_str().unwrap_or("").to_string();
    println!("test message queued; waiting for the mail server (up to 30 s)...");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let data: serde_json::Value = api.get("/alerts").await?;
        let mine = data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["id"] == id.as_str())
            .cloned()
            .unwrap_or_default();
        let rows = copies(&mine);
        let settled = !rows.is_empty() && rows.iter().all(|r| r[1] != "pending");
        if settled || std::time::Instant::now() > deadline {
            println!(
                "{}",
                table::render(&["TO", "STATUS", "ATTEMPTS", "ANSWER"], &rows)
            );
            let sent = rows.iter().filter(|r| r[1] == "sent").count();
            if sent < rows.len() {
                anyhow::bail!("{} of {} copies sent", sent, rows.len());
            }
            println!("every copy sent");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// A query value, encoded but for the commas that separate statuses.
fn encode(s: &str) -> String {
    const KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b',');
    percent_encoding::utf8_percent_encode(s, KEPT).to_string()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api::new(&cli.api, cli.key.clone());
    let key = cli.key.as_deref();
    match cli.command {
        Cmd::Fleet {
            action,
            tenants,
            bin_dir,
            port,
        } => {
            let f = fleet::Fleet::load(&tenants)?;
            match action.as_str() {
                "up" => fleet::up(&f, &fleet::bin_dir(bin_dir), key).await,
                "down" => fleet::down(&f, key).await,
                "serve" => ferry_ctl::page::serve(f, key.map(String::from), port).await,
                _ => fleet::status(&f, key).await,
            }
        }
        Cmd::Queue { status, kind, q } => {
            let mut query = vec!["limit=500".to_string()];
            for (k, v) in [("status", status), ("type", kind), ("q", q)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", encode(&v)));
                }
            }
            let page: QueuePage = api.get(&format!("/queue?{}", query.join("&"))).await?;
            let rows: Vec<Vec<String>> = page
                .jobs
                .iter()
                .map(|j| {
                    vec![
                        j.kind.as_str().into(),
                        j.key().into(),
                        j.status.as_str().into(),
                        j.payload.summary(),
                        j.attempts.to_string(),
                        j.reason_code.clone().unwrap_or_else(|| "-".into()),
                        j.id.to_string(),
                    ]
                })
                .collect();
            let header = [
                "KIND", "KEY", "STATUS", "WHAT", "ATTEMPTS", "REASON", "JOB ID",
            ];
            println!("{}", table::render(&header, &rows));
            println!("{} job(s)", page.length);
            Ok(())
        }
        Cmd::Status { job_key, booking } => {
            let path = if booking {
                format!("/get_booking_status?bookId={}", encode(&job_key))
            } else {
                format!("/get_order_status?uniqueid={}", encode(&job_key))
            };
            let j: JobView = api.get(&path).await?;
            let fields = [
                ("kind", Some(j.kind.as_str().into())),
                (j.kind.key_name(), Some(j.key().to_string())),
                ("status", Some(j.status.as_str().into())),
                ("id", Some(j.id.to_string())),
                ("what", Some(j.payload.summary())),
                ("attempts", Some(j.attempts.to_string())),
                ("next_attempt_at", j.next_attempt_at),
                ("waiting_for", j.waiting_for),
                ("reason_code", j.reason_code),
                ("reason_text", j.reason_text),
                ("target_ref", j.target_ref),
                ("updated_at", Some(j.updated_at)),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    println!("{k:<16} {v}");
                }
            }
            Ok(())
        }
        Cmd::Retry { job_id } => {
            let j: JobView = api.put(&format!("/jobs/{}/retry", encode(&job_id))).await?;
            println!("job {} is {} again", j.id, j.status.as_str());
            Ok(())
        }
        Cmd::Clear => {
            let d: Cleared = api.put("/clear_queue").await?;
            println!("cleared {} waiting job(s)", d.cleared);
            Ok(())
        }
        Cmd::StartWorker => {
            api.put::<IgnoredAny>("/start_worker").await?;
            println!("worker running");
            Ok(())
        }
        Cmd::StopWorker => {
            api.put::<IgnoredAny>("/stop_worker").await?;
            println!("worker stopped: it finishes what it holds and leases nothing more");
            Ok(())
        }
        Cmd::Kill => {
            api.put::<IgnoredAny>("/kill").await?;
            println!("stopping: the worker finishes and exits, then the api flushes and exits");
            Ok(())
        }
        Cmd::Alerts { action } => alerts(&api, &action).await,
    }
}
