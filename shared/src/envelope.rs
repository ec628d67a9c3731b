//! The one JSON envelope every answer of ferry-api is wrapped in:
//! `{"success": true, "message", "data"}` or `{"success": false, "message", "error": {code, detail, fields}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Envelope<T> {
    pub success: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A machine-readable failure: a stable SCREAMING_SNAKE `code`, a sentence for people, and per-field
/// messages when the input was at fault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ErrorBody {
    pub code: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl<T> Envelope<T> {
    pub fn ok(message: impl Into<String>, data: T) -> Self {
        Self {
            success: true,
            message: message.into(),
            data: Some(data),
            error: None,
        }
    }
}

impl Envelope<()> {
    pub fn fail(message: impl Into<String>, error: ErrorBody) -> Self {
        Self {
            success: false,
            message: message.into(),
            data: None,
            error: Some(error),
        }
    }
}
