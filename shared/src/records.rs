//! Records copied from a source (a page of Teamleader companies, say), the payload of a `records`
//! job: what `POST /worker/records` takes, parsed once into [`Records`] or per-field errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::source::valid_resource;
use crate::validate::CreateError;

/// Records per job at most.
pub const MAX_RECORDS: usize = 500;
/// The longest idempotency key.
pub const MAX_KEY: usize = 200;

/// One page of records of one resource. Each record is an object with a string `id` and an
/// RFC 3339 `updated_at`; the rest is kept as the source gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Records {
    /// The source's idempotency key for this page: the same key again is the same job.
    pub key: String,
    /// The resource (`companies`, `contacts`, ...): the target's table.
    pub resource: String,
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
}

impl Records {
    pub fn differences(&self, other: &Records) -> Vec<&'static str> {
        [
            ("resource", self.resource == other.resource),
            ("records", self.records == other.records),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(f, _)| f)
        .collect()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.records.iter().filter_map(|r| r["id"].as_str())
    }

    pub fn view(&self) -> RecordsView {
        RecordsView {
            key: self.key.clone(),
            resource: self.resource.clone(),
            count: self.records.len(),
            ids: self.ids().map(String::from).collect(),
        }
    }
}

/// What people are shown of a `records` job: which records, not their contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordsView {
    pub key: String,
    pub resource: String,
    pub count: usize,
    pub ids: Vec<String>,
}

/// The body of `POST /worker/records`, for the document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordsRequest {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub key: String,
    #[schema(pattern = "^[a-z_]{1,30}$")]
    pub resource: String,
    /// 1 to 500 objects, each with a string `id` and an RFC 3339 `updated_at`.
    #[schema(value_type = Vec<Object>, min_items = 1)]
    pub records: Vec<Value>,
}

/// Turns a `POST /worker/records` body into [`Records`].
pub fn parse_records(body: &[u8]) -> Result<Records, CreateError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| CreateError::Malformed(format!("body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(CreateError::Malformed("body must be a JSON object".into()));
    };
    let mut errors = BTreeMap::new();
    let key = match obj.get("key").and_then(Value::as_str) {
        Some(k) if !k.trim().is_empty() && k.chars().count() <= MAX_KEY => Some(k.to_string()),
        _ => {
            errors.insert("key".into(), format!("must be 1 to {MAX_KEY} characters"));
            None
        }
    };
    let resource = match obj.get("resource").and_then(Value::as_str) {
        Some(r) if valid_resource(r) => Some(r.to_string()),
        _ => {
            errors.insert(
                "resource".into(),
                "must be 1 to 30 lower-case letters or _".into(),
            );
            None
        }
    };
    let records = match obj.remove("records") {
        Some(Value::Array(items)) if (1..=MAX_RECORDS).contains(&items.len()) => {
            let bad = items.iter().position(|r| {
                r["id"].as_str().is_none_or(str::is_empty)
                    || !r["updated_at"].as_str().is_some_and(crate::is_rfc3339)
            });
            match bad {
                Some(i) => {
                    errors.insert(
                        format!("records[{i}]"),
                        "must be an object with a string id and an RFC 3339 updated_at".into(),
                    );
                    None
                }
                None => Some(items),
            }
        }
        _ => {
            errors.insert(
                "records".into(),
                format!("must be a list of 1 to {MAX_RECORDS} records"),
            );
            None
        }
    };
    match (key, resource, records) {
        (Some(key), Some(resource), Some(records)) if errors.is_empty() => Ok(Records {
            key,
            resource,
            records,
        }),
        _ => Err(CreateError::Fields(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_records_parses_and_bad_ones_are_named() {
        let ok = br#"{"key":"companies:1","resource":"companies","records":[{"id":"a","updated_at":"2026-12-01T10:00:00+00:00","name":"Acme"}]}"#;
        let r = parse_records(ok).unwrap();
        assert_eq!(r.ids().collect::<Vec<_>>(), ["a"]);
        assert_eq!(r.view().count, 1);
        let bad = br#"{"key":"","resource":"Companies","records":[{"id":"a"}]}"#;
        let CreateError::Fields(f) = parse_records(bad).unwrap_err() else {
            panic!("fields")
        };
        assert_eq!(
            f.keys().map(String::as_str).collect::<Vec<_>>(),
            ["key", "records[0]", "resource"]
        );
        assert!(matches!(
            parse_records(b"[1]"),
            Err(CreateError::Malformed(_))
        ));
    }
}
