//! Logs go to stdout and to the tenant's `api.log`: human-readable by default, one JSON object a
//! line with `log_format = "json"`. The file rotates by size (`api.log` → `api.log.1` … `.5`).
//! Every line logged while a request is handled carries its request id.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// `api.log` is rotated past this size; this many old files are kept.
const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
const KEEP_FILES: u32 = 5;

pub fn init(level: &str, format: &str, log_file: &Path) -> std::io::Result<()> {
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    let file = RotatingFile::open(log_file, ROTATE_BYTES, KEEP_FILES)?;
    let registry = tracing_subscriber::registry();
    // A second init (tests in one process) keeps the first subscriber.
    let _ = if format == "json" {
        registry
            .with(fmt::layer().json().with_filter(level))
            .with(fmt::layer().json().with_writer(file).with_filter(level))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_filter(level),
            )
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(false)
                    .with_writer(file)
                    .with_filter(level),
            )
            .try_init()
    };
    Ok(())
}

/// A log file that moves itself aside when it grows past a size.
#[derive(Clone)]
pub struct RotatingFile(Arc<Mutex<Inner>>);

struct Inner {
    path: PathBuf,
    file: File,
    written: u64,
    max: u64,
    keep: u32,
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64, keep: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self(Arc::new(Mutex::new(Inner {
            path: path.to_path_buf(),
            file,
            written,
            max,
            keep,
        }))))
    }
}

impl Inner {
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut inner = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("log lock"))?;
        if inner.written + buf.len() as u64 > inner.max && inner.written > 0 {
            // A failed rotation must not stop logging: keep writing to the current file.
            let _ = inner.rotate();
        }
        let n = inner.file.write(buf)?;
        inner.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut inner = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("log lock"))?;
        inner.file.flush()
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = RotatingFile;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Wraps each request in a span carrying its id (the caller's `x-request-id`, if sane, or a new
/// one), so every line logged while handling it names it; echoes the id in the answer.
pub async fn request_id(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.path());
    let mut resp = next.call(req).instrument(span).await?;
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_rotates_by_size_and_keeps_a_bounded_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.log");
        let mut log = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            writeln!(log, "line {i} {}", "x".repeat(40)).unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        for f in ["api.log", "api.log.1", "api.log.2"] {
            assert!(
                std::fs::metadata(dir.path().join(f)).unwrap().len() <= 100,
                "{f}"
            );
        }
        assert!(std::fs::read_to_string(&path).unwrap().contains("line 9"));
    }
}
