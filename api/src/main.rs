//! `ferry-api`: parse the command line, start logging, build the application, run it.

use anyhow::Context;
use clap::Parser;
use ferry_api::cli::Cli;
use ferry_api::startup::Application;
use ferry_api::telemetry;

/// mimalloc, not glibc's malloc: 1.2 times the orders a second at 64 connections
/// (ARCHITECTURE.md, "The allocator"); its pages are kept small by [`small_pages_only`].
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    small_pages_only();
    actix_web::rt::System::new().block_on(run())
}

/// mimalloc reserves its memory 2 MiB-aligned, so where transparent huge pages are on for every
/// mapping ("always", as Debian ships) the pages its first allocations touch, before `main`, are
/// huge: 4 MiB more for an idle api, 4 GB for a fleet of 1,000. This turns them off for the
/// process (`prctl`, which `exec` keeps) and starts it again from the top, with small pages from
/// its first byte. A parent that turned them off already (`ferryctl fleet up` does) spares the
/// second start; where a step fails the api runs as it is.
fn small_pages_only() {
    use std::os::unix::process::CommandExt;
    if rustix::thread::transparent_huge_pages_are_disabled().unwrap_or(true)
        || rustix::thread::disable_transparent_huge_pages(true).is_err()
    {
        return;
    }
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else { return };
    // This very file, even if a deploy has replaced the path since.
    let failed = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
    eprintln!("ferry-api: could not start again with small pages ({failed}); going on");
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let check_only = cli.check_config;
    let settings = cli.settings().context("ferry-api cannot start")?;
    if check_only {
        println!(
            "config ok: tenant '{}' on {}:{}, store {}, target {}, source {}",
            settings.workshop,
            settings.bind,
            settings.port,
            settings.store,
            settings.target.as_ref().map_or("none", |t| t.kind_name()),
            settings.source.as_ref().map_or("none", |s| s.kind_name()),
        );
        return Ok(());
    }
    let log_file = settings.tenant_dir().join("api.log");
    telemetry::init(&settings.log_level, &settings.log_format, &log_file)
        .with_context(|| format!("cannot open the log file {}", log_file.display()))?;
    let app = Application::build(settings)
        .await
        .inspect_err(|e| tracing::error!(error = ?e, "ferry-api cannot start"))
        .context("ferry-api cannot start")?;
    app.run_until_stopped().await?;
    Ok(())
}
