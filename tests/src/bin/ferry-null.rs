//! The benchmark's baseline: an actix-web server that answers every request with 201 and a tiny
//! envelope, doing nothing else. `scripts/bench` runs it beside ferry-api with the same number of
//! actix workers, so the ratio between the two is what durability costs.

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ferry-null",
    about = "A do-nothing actix-web server answering 201 (benchmark baseline)"
)]
struct Cli {
    /// Port to listen on (on 127.0.0.1).
    #[arg(long)]
    port: u16,
    /// actix-web worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Created()
                .content_type("application/json")
                .body(r#"{"success":true,"message":"job placed","data":{}}"#)
        }))
    })
    .workers(cli.workers)
    .bind(("127.0.0.1", cli.port))?
    .run()
    .await
}
