use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_tests::{TestSim, eventually, free_port, order, run_to_end};
use serde_json::{Value, json};

/// Kills whatever the fleet left running (its processes are detached on purpose), by pid.
struct FleetGuard(PathBuf);

impl Drop for FleetGuard {
    fn drop(&mut self) {
        for pid in pids(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

fn pids(run_dir: &Path) -> Vec<u32> {
    std::fs::read_dir(run_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn ferryctl(args: &[&str]) -> String {
    let (status, out) = run_to_end("ferryctl", args, &[]);
    assert!(status.success(), "ferryctl {args:?} failed:\n{out}");
    out
}

/// The status table's row for `name`, split into cells (every cell is one word but the last).
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

async fn alive(http: &reqwest::Client, port: u16) -> Value {
    let body: Value = http
        .get(format!("http://127.0.0.1:{port}/alive"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"].clone()
}

#[tokio::test]
async fn a_fleet_delivers_while_one_erp_is_down_shows_it_and_stops_losing_nothing() {
    let mut sims = [TestSim::start(), TestSim::start(), TestSim::start()];
    let names = ["Alpha", "Bravo", "Charlie"];
    let ports = [free_port(), free_port(), free_port()];
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let _guard = FleetGuard(run_dir.clone());
    let mut file = format!(
        "data_dir = \"{}\"\nrun_dir = \"{}\"\n",
        dir.path().join("data").display(),
        run_dir.display()
    );
    for i in 0..3 {
        file += &format!(
            "[[tenant]]\nname = \"{}\"\nport = {}\n[tenant.target]\nkind = \"erp_rest\"\nbase_url = \"{}\"\n",
            names[i],
            ports[i],
            sims[i].base()
        );
    }
    file += &format!(
        "[[tenant]]\nname = \"Delta\"\nport = {}\nactive = false\n",
        free_port()
    );
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(&tenants, file).unwrap();
    let tenants = tenants.to_str().unwrap();

    let out = ferryctl(&["fleet", "up", tenants]);
    assert!(out.contains("[3/3] Charlie"), "progress per tenant:\n{out}");
    assert_eq!(
        pids(&run_dir).len(),
        6,
        "an api and a worker per active tenant"
    );

    sims[2].stop();
    // No idle pool: the fleet is stopped and started again on the same ports.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        for n in 0..5 {
            let mut o = order(&format!("{name}-{n}"));
            o["workshop"] = json!(name);
            let resp = http
                .post(format!("http://127.0.0.1:{}/create", ports[i]))
                .json(&o)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    }
    eventually(
        "Alpha and Bravo to deliver",
        Duration::from_secs(30),
        || async {
            let a = alive(&http, ports[0]).await;
            let b = alive(&http, ports[1]).await;
            (a["queue"]["created"] == 5 && b["queue"]["created"] == 5).then_some(())
        },
    )
    .await;
    let charlie = alive(&http, ports[2]).await;
    assert_eq!(charlie["queue"]["created"], 0, "its ERP is down");
    assert_eq!(sims[0].lines().await["count"], 5);

    let table = ferryctl(&["fleet", "status", tenants]);
    let alpha = row(&table, "Alpha");
    assert_eq!(&alpha[2..6], ["up", "running", "0", "0"], "{table}");
    assert!(table.lines().next().unwrap().contains("LAST DELIVERY"));
    assert!(alpha.last().unwrap() == "ago", "Alpha delivered: {table}");
    let charlie = row(&table, "Charlie");
    assert_eq!(&charlie[2..5], ["up", "running", "5"], "{table}");
    assert_eq!(
        charlie.last().unwrap(),
        "-",
        "Charlie never delivered: {table}"
    );
    assert_eq!(row(&table, "Delta")[2], "inactive");

    let before = pids(&run_dir);
    let out = ferryctl(&["fleet", "down", tenants]);
    assert_eq!(out.matches("stopped").count(), 3, "{out}");
    assert!(
        before.iter().all(|p| gone(*p)),
        "every process of the fleet exited"
    );

    ferryctl(&["fleet", "up", tenants]);
    let charlie = alive(&http, ports[2]).await;
    let waiting = charlie["queue"]["placed"].as_u64().unwrap()
        + charlie["queue"]["processing"].as_u64().unwrap();
    assert_eq!(waiting, 5, "Charlie's jobs survived the stop: {charlie}");
    assert_eq!(alive(&http, ports[0]).await["queue"]["created"], 5);
    ferryctl(&["fleet", "down", tenants]);
}

/// `ferryctl` against one tenant: what it shows is what the api holds, and what it changes
/// changes there.
#[tokio::test]
async fn one_tenant_commands_show_and_change_what_the_api_holds() {
    let api = ferry_tests::TestApi::with(ferry_tests::ApiOptions::default().key("k-ctl")).await;
    let base = api.base();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--api", base.as_str(), "--key", "k-ctl"];
        all.extend_from_slice(args);
        run_to_end("ferryctl", &all, &[])
    };
    let ok = |args: &[&str]| {
        let (status, out) = ctl(args);
        assert!(status.success(), "ferryctl {args:?} failed:\n{out}");
        out
    };
    let failing = api.create_ok(&order("ctl-fails")).await;
    api.create_ok(&order("ctl-waits")).await;

    let queue = ok(&["queue"]);
    assert!(
        queue.contains("ctl-fails") && queue.contains("ctl-waits"),
        "{queue}"
    );
    assert!(queue.contains("2 job(s)"), "{queue}");
    let status = ok(&["status", "ctl-waits"]);
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["status", "placed"]),
        "{status}"
    );

    // A job in error, through the worker protocol: an operator retries it.
    let leased = api.lease("w-ctl", 1, 0, 30_000).await;
    let job = &leased["jobs"][0];
    assert_eq!(job["job_id"], failing["id"]);
    api.report(
        "w-ctl",
        json!([{"job_id": job["job_id"], "lease_id": job["lease_id"],
                "outcome": {"kind": "failed", "reason_code": "ERP_REJECTED", "reason_text": "no such worksheet"}}]),
    )
    .await;
    let errors = ok(&["queue", "--type", "error"]);
    assert!(
        errors.contains("ERP_REJECTED") && errors.contains("1 job(s)"),
        "{errors}"
    );
    let id = failing["id"].as_str().unwrap();
    let out = ok(&["retry", id]);
    assert_eq!(out.trim(), format!("job {id} is placed again"));
    let (status, out) = ctl(&["retry", id]);
    assert!(!status.success(), "retrying a placed job is refused");
    assert!(
        out.contains("409") && out.contains("only jobs in error"),
        "{out}"
    );

    assert!(ok(&["stop-worker"]).contains("worker stopped"));
    assert_eq!(api.alive().await["worker"]["desired"], "stopped");
    assert!(ok(&["start-worker"]).contains("worker running"));
    assert_eq!(api.alive().await["worker"]["desired"], "running");
    assert_eq!(ok(&["clear"]).trim(), "cleared 2 waiting job(s)");
    assert_eq!(api.alive().await["queue"]["cleared"], 2);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_fleet_with_an_api_key_delivers_keeps_the_key_off_disk_and_stops() {
    let sim = TestSim::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let _guard = FleetGuard(run_dir.clone());
    let file = format!(
        "data_dir = \"{}\"\nrun_dir = \"{}\"\n[[tenant]]\nname = \"Keyed\"\nport = {port}\n\
         [tenant.target]\nkind = \"erp_rest\"\nbase_url = \"{}\"\n\
         [[tenant]]\nname = \"Filed\"\nport = {}\napi_key = \"f1l3d\"\n\
         [tenant.target]\nkind = \"erp_rest\"\nbase_url = \"{}\"\n\
         [[tenant]]\nname = \"Dormant\"\nport = {}\nactive = false\n",
        dir.path().join("data").display(),
        run_dir.display(),
        sim.base(),
        free_port(),
        sim.base(),
        free_port()
    );
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(&tenants, file).unwrap();
    let tenants = tenants.to_str().unwrap();
    let with_key = [("FERRY_API_KEY", "k3y")];

    let (status, out) = run_to_end("ferryctl", &["fleet", "up", tenants], &with_key);
    assert!(status.success(), "{out}");
    assert!(out.contains("[2/2] Filed"), "{out}");
    // The table right after `up` shows the workers that have already made contact.
    assert_eq!(&row(&out, "Keyed")[2..4], ["up", "running"], "{out}");
    assert_eq!(&row(&out, "Filed")[2..4], ["up", "running"], "{out}");

    for file in files_under(&run_dir) {
        let text = std::fs::read(&file).unwrap();
        for key in [&b"k3y"[..], b"f1l3d"] {
            assert!(
                !text.windows(key.len()).any(|w| w == key),
                "{} holds a key",
                file.display()
            );
        }
    }

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/create");
    let mut keyed = order("keyed-1");
    keyed["workshop"] = json!("Keyed");
    let resp = http.post(&url).json(&keyed).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the api took the key");
    let resp = http
        .post(&url)
        .header("x-api-key", "k3y")
        .json(&keyed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually(
        "the order to be delivered",
        Duration::from_secs(20),
        || async { (sim.lines().await["count"] == 1).then_some(()) },
    )
    .await;

    // Without the key, `down` stops the tenant with its own key, and says at once why the other
    // did not stop.
    let before = pids(&run_dir);
    let (status, out) = run_to_end("ferryctl", &["fleet", "down", tenants], &[]);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("stopping 2 tenant(s)"),
        "the inactive one is not counted: {out}"
    );
    let keyed = out.lines().find(|l| l.contains("Keyed")).unwrap();
    assert!(keyed.contains("refused") && keyed.contains("401"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("Filed") && l.ends_with("stopped")),
        "{out}"
    );

    let (status, out) = run_to_end("ferryctl", &["fleet", "down", tenants], &with_key);
    assert!(status.success(), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("Keyed") && l.ends_with("stopped")),
        "{out}"
    );
    assert!(before.iter().all(|p| gone(*p)), "every process exited");
}

#[tokio::test]
async fn a_worker_that_dies_at_start_fails_fleet_up_with_its_cause_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let _guard = FleetGuard(run_dir.clone());
    // The real api beside a worker that cannot start.
    let bins = dir.path().join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    std::os::unix::fs::symlink(ferry_tests::bin("ferry-api"), bins.join("ferry-api")).unwrap();
    let worker = bins.join("ferry-worker");
    std::fs::write(
        &worker,
        "#!/bin/sh\necho 'starting'\necho 'error: the ERP at http://erp.invalid refused the login' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = format!(
        "data_dir = \"{}\"\nrun_dir = \"{}\"\n[[tenant]]\nname = \"Broken\"\nport = {}\n",
        dir.path().join("data").display(),
        run_dir.display(),
        free_port()
    );
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(&tenants, file).unwrap();
    let (status, out) = run_to_end(
        "ferryctl",
        &[
            "fleet",
            "up",
            tenants.to_str().unwrap(),
            "--bin-dir",
            bins.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!status.success(), "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        out.contains("refused the login"),
        "the cause is on the terminal, not only in a file: {out}"
    );
    let (status, out) = run_to_end(
        "ferryctl",
        &["fleet", "down", tenants.to_str().unwrap()],
        &[],
    );
    assert!(status.success(), "{out}");
}
