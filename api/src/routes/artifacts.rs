//! What a connector saved of a failed attempt (the browser connector's screenshot and page),
//! kept under `<tenant dir>/artifacts/<job id>/<name>`, named in the job's log, and removed with
//! the job when it is pruned.

use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use ferry_shared::envelope::{ErrorCode, Success};
use ferry_shared::job::JobId;
use ferry_shared::protocol::is_artifact_name;
use serde::Serialize;
use utoipa::ToSchema;

use super::jobs::load;
use super::ok;
use super::openapi::JobLookupFailures;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest artifact taken (a screenshot of a large page).
pub const MAX_ARTIFACT: usize = 8 * 1024 * 1024;
/// Files kept per job: the latest (two attempts' screenshot and page); a job failing again and
/// again must not fill the disk.
const KEPT_PER_JOB: usize = 4;
const DIR: &str = "artifacts";

/// `PUT /worker/artifacts/...`: what was saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactSaved {
    pub job_id: JobId,
    pub name: String,
    pub bytes: usize,
}

fn path_of(state: &AppState, job: JobId, name: &str) -> Result<PathBuf, ApiError> {
    if !is_artifact_name(name) {
        return Err(ApiError::BadRequest {
            code: ErrorCode::InvalidPath,
            detail: format!(
                "'{name}' is not an artifact name (lower-case letters, digits, '-', '_', '.', \
                 ending in .png or .html, at most 100 characters)"
            ),
        });
    }
    Ok(state
        .settings
        .tenant_dir()
        .join(DIR)
        .join(job.to_string())
        .join(name))
}

/// Saves a screenshot or page of a job's failed attempt.
///
/// The body is the file (a PNG or an HTML page, at most 8 MiB); the report of the attempt names
/// it in `detail.artifacts`.
#[utoipa::path(
    put,
    path = "/worker/artifacts/{id}/{name}",
    tag = "worker",
    security(("worker_token" = []), ("worker_bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "The job's id."),
        ("name" = String, Path, description = "The file's name.", pattern = r"^[a-z0-9_-][a-z0-9._-]{0,94}\.(png|html)$"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file."),
    responses(
        (status = 200, description = "Saved.", body = Success<ArtifactSaved>),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: over 8 MiB.", body = ferry_shared::envelope::Failure),
        JobLookupFailures,
    ),
)]
pub(super) async fn put_artifact(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let job = load(&state, &id)?;
    let file = path_of(&state, job.id, &name)?;
    let bytes = super::read_body(body, MAX_ARTIFACT).await?;
    let size = bytes.len();
    web::block(move || {
        let dir = file.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        std::fs::write(&file, &bytes)?;
        keep_latest(dir, KEPT_PER_JOB)
    })
    .await
    .map_err(|_| ApiError::Store(crate::store::StoreError::Closed))?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot save an artifact");
        ApiError::Store(match crate::store::disk::is_no_space(&e) {
            true => crate::store::StoreError::DiskFull,
            false => crate::store::StoreError::Engine(Box::new(e)),
        })
    })?;
    Ok(ok(
        StatusCode::OK,
        "saved",
        ArtifactSaved {
            job_id: job.id,
            name,
            bytes: size,
        },
    ))
}

/// A screenshot or page saved of a job's failed attempt.
///
/// The names are in the job's log (`artifacts` of an attempt). A page is served sandboxed: its
/// scripts do not run.
#[utoipa::path(
    get,
    path = "/jobs/{id}/artifacts/{name}",
    tag = "operators",
    params(
        ("id" = uuid::Uuid, Path, description = "The job's id."),
        ("name" = String, Path, description = "The file's name, as the job's log gives it.", pattern = r"^[a-z0-9_-][a-z0-9._-]{0,94}\.(png|html)$"),
    ),
    responses(
        (status = 200, description = "The file.", content(
            (Vec<u8> = "image/png"),
            (String = "text/html"),
        )),
        (status = 404, description = "`JOB_NOT_FOUND`: no such job. `NOT_FOUND`: the job has no artifact of that name.", body = ferry_shared::envelope::Failure),
        (status = 400, description = "`INVALID_JOB_ID`: the id is not a UUID. `INVALID_PATH`: not an artifact name.", body = ferry_shared::envelope::Failure),
    ),
)]
pub(super) async fn artifact(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let job = load(&state, &id)?;
    let file = path_of(&state, job.id, &name)?;
    let bytes = web::block(move || std::fs::read(file))
        .await
        .map_err(|_| ApiError::Store(crate::store::StoreError::Closed))?
        .map_err(|_| ApiError::NotFound {
            code: ErrorCode::NotFound,
            detail: format!("job {} has no artifact '{name}'", job.id),
        })?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("X-Content-Type-Options", "nosniff"));
    if name.ends_with(".html") {
        // An ERP's page, saved: shown, never run in this origin.
        resp.content_type("text/html; charset=utf-8")
            .insert_header(("Content-Security-Policy", "sandbox"));
    } else {
        resp.content_type("image/png");
    }
    Ok(resp.body(bytes))
}

/// Removes all but the `keep` most recent files of `dir`.
fn keep_latest(dir: &std::path::Path, keep: usize) -> std::io::Result<()> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let extra = files.len().saturating_sub(keep);
    for (_, path) in files.into_iter().take(extra) {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// Removes the artifacts of jobs no longer in the store (pruned); answers how many jobs' went.
pub fn prune(state: &AppState) -> usize {
    let dir = state.settings.tenant_dir().join(DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let gone = match name.to_str().and_then(JobId::parse) {
            Some(id) => matches!(state.store.job(id), Ok(None)),
            None => false,
        };
        if gone && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_keeps_only_its_latest_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::time::SystemTime::now();
        for i in 0..6u64 {
            let path = dir.path().join(format!("attempt-{i}.png"));
            let file = std::fs::File::create(&path).unwrap();
            file.set_modified(base + std::time::Duration::from_secs(i))
                .unwrap();
        }
        keep_latest(dir.path(), 4).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "attempt-2.png",
                "attempt-3.png",
                "attempt-4.png",
                "attempt-5.png"
            ]
        );
    }
}
