//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! shared types: `GET /openapi.json`, with Swagger UI at `/docs` (bundled in the binary, so it
//! works with no internet). Both are open, like `/alive`: they hold no tenant data.
//!
//! Answers every operation can give (401 where a key is needed, 500, 503 from a failed store, and
//! the `x-request-id` header) are added here once, not repeated on each handler.

use actix_web::http::{Method, header};
use actix_web::{HttpResponse, web};
use ferry_shared::config::TenantSlug;
use ferry_shared::envelope::Failure;
use ferry_shared::validate::CreateRequest;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, SecurityRequirement};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::route;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry-api",
        description = "Carries jobs from upstream systems to the systems that must act on them, \
            exactly once, for one tenant. Every answer is a JSON envelope: `{success: true, \
            message, data}` or `{success: false, message, error: {code, detail, fields}}`; \
            `error.code` is one of `ErrorCode`. Send the API key as `x-api-key` or \
            `Authorization: Bearer`; `/worker/*` takes the worker token the same way. Every \
            answer carries `x-request-id` (yours, if you sent a sane one), which the api log \
            shows too.",
        license(name = "MIT"),
    ),
    components(schemas(Failure)),
    security(("api_key" = []), ("bearer" = [])),
    tags(
        (name = "upstream", description = "Systems that place jobs and ask where they stand."),
        (name = "operators", description = "People who look at jobs and fix what failed."),
        (name = "management", description = "The system that watches tenants and starts and stops their workers."),
        (name = "worker", description = "ferry-worker's protocol: lease, deliver, report."),
    ),
)]
struct ApiDoc;

/// The document for one tenant: every route of [`super::table`], its name in the title, and as
/// the `workshop` that `POST /create` takes.
pub fn document(workshop: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let mut schemas = Vec::new();
    for route in super::table() {
        doc.paths.merge(route.doc.paths());
        route.doc.schemas(&mut schemas);
    }
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    Schemes.modify(&mut doc);
    CommonAnswers.modify(&mut doc);
    doc.info.title = format!("ferry-api: {workshop}");
    let field = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut(CreateRequest::name().as_ref()))
        .and_then(|s| match s {
            RefOr::T(Schema::Object(o)) => o.properties.get_mut("workshop"),
            _ => None,
        });
    if let Some(RefOr::T(Schema::Object(field))) = field {
        field.pattern = Some(CreateRequest::workshop_pattern(workshop));
        field.examples = vec![workshop.into()];
        // A number's text has no letters: it can name only a workshop of digits. `null` is
        // taken as absent.
        if !TenantSlug::from_name(workshop)
            .as_str()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            field.schema_type = SchemaType::Array(vec![Type::String, Type::Null]);
        }
    }
    doc
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(route(Method::GET, "/openapi.json", openapi_json))
        .service(route(Method::GET, "/docs", docs_redirect))
        .service(SwaggerUi::new("/docs/{_:.*}").config(Config::new(["/openapi.json"])));
}

/// The document, serialized on first request: most tenants' apis are never asked for it.
#[derive(Debug, Default)]
pub struct DocumentJson(std::sync::OnceLock<web::Bytes>);

async fn openapi_json(doc: web::Data<DocumentJson>, state: web::Data<AppState>) -> HttpResponse {
    let json = doc.0.get_or_init(|| {
        let doc = document(&state.settings.workshop);
        // Serializing plain data: cannot fail.
        web::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json.clone())
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

struct Schemes;

impl Modify for Schemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let header_key = |about: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                about,
            )))
        };
        let bearer = |about: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(about))
                    .build(),
            )
        };
        components.add_security_scheme("api_key", header_key("The tenant's API key."));
        components.add_security_scheme("bearer", bearer("The tenant's API key."));
        components.add_security_scheme(
            "worker_token",
            header_key("The worker token (the API key unless `worker_token` is set)."),
        );
        components.add_security_scheme(
            "worker_bearer",
            bearer("The worker token (the API key unless `worker_token` is set)."),
        );
    }
}

struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let open = |op: &Operation| {
            op.security
                .as_ref()
                .is_some_and(|s| s.contains(&SecurityRequirement::default()))
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let needs_key = !open(op);
                let answers = &mut op.responses.responses;
                if needs_key {
                    answers.entry("401".into()).or_insert_with(|| {
                        failure("`UNAUTHORIZED`: the key is missing or wrong.").into()
                    });
                }
                answers.entry("500".into()).or_insert_with(|| {
                    failure("`INTERNAL`: an unexpected failure; the cause is in the api log.")
                        .into()
                });
                answers.entry("503".into()).or_insert_with(|| {
                    failure(
                        "`DISK_FULL`: the disk is full and nothing was stored. \
                         `STORE_UNAVAILABLE`: the store failed and the api is stopping to be \
                         restarted. Retry after `Retry-After` seconds.",
                    )
                    .into()
                });
                for (status, answer) in answers.iter_mut() {
                    if let RefOr::T(answer) = answer {
                        add_headers(status, answer);
                    }
                }
            }
        }
    }
}

/// What any route taking a job id in its path can answer besides its own.
pub(super) struct JobLookupFailures;

impl IntoResponses for JobLookupFailures {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        [
            ("400", "`INVALID_JOB_ID`: the id is not a UUID."),
            ("404", "`JOB_NOT_FOUND`: no such job."),
        ]
        .into_iter()
        .map(|(status, about)| (status.to_string(), failure(about).into()))
        .collect()
    }
}

/// What both intake routes answer besides their own 2xx, 400 and 409.
pub(super) struct IntakeFailures;

impl IntoResponses for IntakeFailures {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        [
            ("413", "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB."),
            (
                "415",
                "`UNSUPPORTED_MEDIA_TYPE`: the body must be `application/json`.",
            ),
            (
                "503",
                "`QUEUE_FULL`: `max_queue` jobs are waiting. `SHUTTING_DOWN`: the api is \
                 stopping. `DISK_FULL`: the disk is full and nothing was stored (intake \
                 resumes by itself when space comes back). `STORE_UNAVAILABLE`: the store \
                 failed. Retry after `Retry-After` seconds.",
            ),
        ]
        .into_iter()
        .map(|(status, about)| (status.to_string(), failure(about).into()))
        .collect()
    }
}

/// What any route taking a JSON body through `web::Json` can answer besides its own.
pub(super) struct JsonBodyFailures;

impl IntoResponses for JsonBodyFailures {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        [
            (
                "400",
                "`VALIDATION_FAILED`: a field out of range (`error.fields` names it). \
                 `INVALID_BODY`: the JSON does not have this shape. `MALFORMED_JSON`: the body is \
                 not JSON.",
            ),
            ("413", "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB."),
            (
                "415",
                "`UNSUPPORTED_MEDIA_TYPE`: the body must be `application/json`.",
            ),
        ]
        .into_iter()
        .map(|(status, about)| (status.to_string(), failure(about).into()))
        .collect()
    }
}

fn failure(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Failure::name())))
                .build(),
        )
        .build()
}

fn add_headers(status: &str, answer: &mut Response) {
    let text = || ObjectBuilder::new().schema_type(Type::String).build();
    answer.headers.insert(
        "x-request-id".into(),
        HeaderBuilder::new()
            .schema(Some(text()))
            .description(Some(
                "The request's id, as the api log shows it: yours if you sent a sane one.",
            ))
            .build()
            .into(),
    );
    if status == "503" {
        answer.headers.insert(
            "retry-after".into(),
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]+$"))
                        .build(),
                ))
                .description(Some("Seconds to wait before trying again."))
                .build()
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::to_value(document("Bennys Auto")).unwrap()
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops.push((method.to_uppercase(), path.clone(), op));
            }
        }
        ops
    }

    #[test]
    fn every_operation_says_what_it_answers_on_failure() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path, op) in operations(&doc) {
            let answers = op["responses"].as_object().unwrap();
            assert!(
                answers
                    .keys()
                    .any(|s| s.starts_with('2') || (path == "/oauth/start" && s == "302")),
                "{method} {path}"
            );
            for status in ["500", "503"] {
                assert!(answers.contains_key(status), "{method} {path}: {status}");
            }
            let open = op["security"] == serde_json::json!([{}]);
            assert_eq!(
                answers.contains_key("401"),
                !open,
                "{method} {path}: 401 exactly when a key is needed"
            );
            for (status, answer) in answers {
                assert!(
                    answer["headers"]["x-request-id"].is_object(),
                    "{method} {path} {status}"
                );
                // The original service's status path answers in its own shape.
                let legacy = path == "/check_order_status" && ["400", "404"].contains(&&**status);
                if legacy {
                    assert_eq!(
                        answer["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/LegacyError",
                        "{method} {path} {status}"
                    );
                } else if path == "/alive" && status == "503" {
                    // A probe acts on the status; the body is the same as the 200's.
                    assert_eq!(
                        answer["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Success_Alive",
                        "{method} {path} {status}"
                    );
                } else if path == "/oauth/callback" && ["400", "502"].contains(&&**status) {
                    // A person's browser lands here: a page, whatever happened.
                    assert!(
                        answer["content"]["text/html"].is_object(),
                        "{method} {path} {status}"
                    );
                } else if path == "/oauth/start" && status == "302" {
                    assert!(answer["content"].is_null(), "a redirect has no body");
                } else if !status.starts_with('2') {
                    assert_eq!(
                        answer["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Failure",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20);
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(doc["components"]["schemas"][name].is_object(), "{r}");
        }
    }

    #[test]
    fn every_error_code_is_listed_and_the_tenant_is_named() {
        let doc = doc();
        assert_eq!(doc["info"]["title"], "ferry-api: Bennys Auto");
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(codes.len(), ferry_shared::envelope::ErrorCode::ALL.len());
        let table = doc["components"]["schemas"]["ErrorCode"]["description"]
            .as_str()
            .unwrap();
        for code in ferry_shared::envelope::ErrorCode::ALL {
            assert!(table.contains(&format!("`{}`", code.as_str())), "{code:?}");
        }
        let workshop = &doc["components"]["schemas"]["CreateRequest"]["properties"]["workshop"];
        assert_eq!(workshop["examples"][0], "Bennys Auto");
        assert_eq!(workshop["type"], serde_json::json!(["string", "null"]));
        let required = &doc["components"]["schemas"]["CreateRequest"]["required"];
        assert!(
            !required.as_array().unwrap().contains(&"workshop".into()),
            "the api is the workshop: {required}"
        );
    }
}
