//! `ferry-api`: parse the command line, start logging, build the application, run it.

use anyhow::Context;
use clap::Parser;
use ferry_api::cli::Cli;
use ferry_api::startup::Application;
use ferry_api::telemetry;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
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
