//! `ferryctl`: parse the command line and run one command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferry_ctl::client::Api;
use ferry_ctl::{fleet, table};

#[derive(Parser)]
#[command(
    name = "ferryctl",
    version,
    about = "Run a fleet of Ferry tenants, or operate one tenant's api.",
    after_help = "Examples:\n  ferryctl fleet up tenants.toml\n  ferryctl fleet status tenants.toml\n  \
ferryctl --api http://127.0.0.1:8001 queue --type error\n  \
ferryctl --api http://127.0.0.1:8001 retry 01a20995-4339-75e8-964d-803da9537551\n\n\
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
        #[arg(value_parser = ["up", "down", "status"])]
        action: String,
        /// The tenants file (name, port, target, active per tenant).
        tenants: PathBuf,
        /// Where ferry-api and ferry-worker are [default: beside ferryctl].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
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
    /// Where one order stands, by its uniqueid.
    Status { uniqueid: String },
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("ferryctl: {e:#}");
        std::process::exit(1);
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api::new(&cli.api, cli.key);
    match cli.command {
        Cmd::Fleet {
            action,
            tenants,
            bin_dir,
        } => {
            let f = fleet::Fleet::load(&tenants)?;
            match action.as_str() {
                "up" => fleet::up(&f, &fleet::bin_dir(bin_dir)).await,
                "down" => fleet::down(&f).await,
                _ => fleet::status(&f).await,
            }
        }
        Cmd::Queue { status, kind, q } => {
            let mut query = vec!["limit=500".to_string()];
            for (k, v) in [("status", status), ("type", kind), ("q", q)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", encode(&v)));
                }
            }
            let data = api.get(&format!("/queue?{}", query.join("&"))).await?;
            let rows: Vec<Vec<String>> = data["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    let s = |k: &str| match &j[k] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    vec![
                        s("uniqueid"),
                        s("status"),
                        s("worksheet"),
                        s("amount"),
                        s("attempts"),
                        s("reason_code"),
                        s("id"),
                    ]
                })
                .collect();
            let header = [
                "UNIQUEID",
                "STATUS",
                "WORKSHEET",
                "AMOUNT",
                "ATTEMPTS",
                "REASON",
                "JOB ID",
            ];
            println!("{}", table::render(&header, &rows));
            println!("{} job(s)", data["length"]);
            Ok(())
        }
        Cmd::Status { uniqueid } => {
            let j = api
                .get(&format!("/get_order_status?uniqueid={}", encode(&uniqueid)))
                .await?;
            for k in [
                "uniqueid",
                "status",
                "id",
                "worksheet",
                "product_nr",
                "amount",
                "attempts",
                "next_attempt_at",
                "reason_code",
                "reason_text",
                "target_ref",
                "updated_at",
            ] {
                if !j[k].is_null() {
                    let v = j[k].as_str().map_or(j[k].to_string(), str::to_string);
                    println!("{k:<16} {v}");
                }
            }
            Ok(())
        }
        Cmd::Retry { job_id } => {
            let j = api.put(&format!("/jobs/{}/retry", encode(&job_id))).await?;
            println!("job {} is {} again", j["id"], j["status"]);
            Ok(())
        }
        Cmd::Clear => {
            let d = api.put("/clear_queue").await?;
            println!("cleared {} waiting job(s)", d["cleared"]);
            Ok(())
        }
        Cmd::StartWorker => {
            api.put("/start_worker").await?;
            println!("worker running");
            Ok(())
        }
        Cmd::StopWorker => {
            api.put("/stop_worker").await?;
            println!("worker stopped: it finishes what it holds and leases nothing more");
            Ok(())
        }
        Cmd::Kill => {
            api.put("/kill").await?;
            println!("stopping: the worker finishes and exits, then the api flushes and exits");
            Ok(())
        }
    }
}
