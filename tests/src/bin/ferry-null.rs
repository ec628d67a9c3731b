//! The benchmark's baseline: an actix-web server that reads each request's body and answers 200
//! with a tiny envelope, doing nothing else. `scripts/bench` runs it beside ferry-api with the same
//! number of actix workers, so the ratio between the two is what durability costs. (It reads the
//! body, as ferry-api must: a baseline that skips it measured three times as fast and flattered
//! every ratio.)

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ferry-null",
    about = "A do-nothing actix-web server that reads the body and answers 200 (benchmark baseline)"
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
        App::new().default_service(web::to(|body: web::Bytes| async move {
            // The body is read (and its length used) like ferry-api's, not left on the socket.
            let message = if body.is_empty() {
                "empty"
            } else {
                "job placed"
            };
            HttpResponse::Ok()
                .content_type("application/json")
                .body(format!(
                    r#"{{"success":true,"message":"{message}","data":{{}}}}"#
                ))
        }))
    })
    .workers(cli.workers)
    .bind(("127.0.0.1", cli.port))?
    .run()
    .await
}
