//! Parse, don't validate: `POST /create` bodies become an [`OrderLine`] here, once, or a list of
//! per-field errors that name the field.
//!
//! Accepts what the deployed OilMat client sends: the legacy field names (`unique_id`, `dealer`,
//! `case_nr`, `product_amount`) and a body that is a JSON string holding the JSON object.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::Secret;
use crate::config::TenantSlug;
use crate::job::OrderLine;

/// The largest amount one pumping can report; anything above is a typo or a broken dispenser.
pub const MAX_AMOUNT: f64 = 100_000.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CreateError {
    /// The body is not a JSON object (nor a JSON string holding one).
    #[error("{0}")]
    Malformed(String),
    /// The body is an object but some fields are missing or wrong.
    #[error("{} field(s) invalid", .0.len())]
    Fields(BTreeMap<String, String>),
}

/// Canonical name first, then the names the legacy client uses.
const UNIQUEID: &[&str] = &["uniqueid", "unique_id"];
const WORKSHOP: &[&str] = &["workshop", "dealer"];
const WORKSHEET: &[&str] = &["worksheet", "case_nr", "case_id"];
const PRODUCT_NR: &[&str] = &["product_nr"];
const AMOUNT: &[&str] = &["amount", "product_amount"];
const USERNAME: &[&str] = &["username"];
const PASSWORD: &[&str] = &["password"];

/// Turns a request body into an order line for the instance serving `this_workshop`.
pub fn parse_create(body: &[u8], this_workshop: &str) -> Result<OrderLine, CreateError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| CreateError::Malformed(format!("body is not valid JSON: {e}")))?;
    let value = match value {
        // The deployed client sends `json.dumps(order)` as the JSON body: a string holding JSON.
        Value::String(inner) => serde_json::from_str(&inner).map_err(|e| {
            CreateError::Malformed(format!(
                "body is a JSON string that does not hold JSON: {e}"
            ))
        })?,
        other => other,
    };
    let Value::Object(obj) = value else {
        return Err(CreateError::Malformed(
            "body must be a JSON object".to_string(),
        ));
    };
    parse_fields(&obj, this_workshop)
}

fn parse_fields(obj: &Map<String, Value>, this_workshop: &str) -> Result<OrderLine, CreateError> {
    let mut errors = BTreeMap::new();
    let uniqueid = required_text(obj, UNIQUEID, 128, &mut errors);
    let workshop = required_text(obj, WORKSHOP, 200, &mut errors);
    let worksheet = required_text(obj, WORKSHEET, 64, &mut errors);
    let product_nr = required_text(obj, PRODUCT_NR, 64, &mut errors);
    let amount = amount(obj, &mut errors);
    let username = optional_text(obj, USERNAME, 256, &mut errors);
    let password = optional_text(obj, PASSWORD, 256, &mut errors);

    if let Some(w) = &workshop
        && TenantSlug::from_name(w) != TenantSlug::from_name(this_workshop)
    {
        errors.insert(
            WORKSHOP[0].to_string(),
            format!("this is the api of workshop '{this_workshop}', not '{w}'"),
        );
    }
    match (uniqueid, workshop, worksheet, product_nr, amount) {
        (Some(uniqueid), Some(workshop), Some(worksheet), Some(product_nr), Some(amount))
            if errors.is_empty() =>
        {
            Ok(OrderLine {
                uniqueid,
                workshop,
                worksheet,
                product_nr,
                amount,
                username,
                password: password.map(Secret::new),
            })
        }
        _ => Err(CreateError::Fields(errors)),
    }
}

/// The first of `names` present in `obj`, with the canonical name for error messages.
fn lookup<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| obj.get(*n))
        .filter(|v| !v.is_null())
}

fn text(
    obj: &Map<String, Value>,
    names: &[&str],
    max_chars: usize,
    errors: &mut BTreeMap<String, String>,
) -> Option<Option<String>> {
    let field = names[0];
    let s = match lookup(obj, names) {
        None => return Some(None),
        Some(Value::String(s)) => s.trim().to_string(),
        // The legacy client sends case numbers and product numbers as JSON numbers.
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            errors.insert(field.into(), "must be a string".into());
            return None;
        }
    };
    if s.chars().count() > max_chars {
        errors.insert(
            field.into(),
            format!("must be at most {max_chars} characters"),
        );
        return None;
    }
    if s.chars().any(char::is_control) {
        errors.insert(field.into(), "must not contain control characters".into());
        return None;
    }
    Some(Some(s))
}

fn required_text(
    obj: &Map<String, Value>,
    names: &[&str],
    max_chars: usize,
    errors: &mut BTreeMap<String, String>,
) -> Option<String> {
    match text(obj, names, max_chars, errors)? {
        Some(s) if !s.is_empty() => Some(s),
        _ => {
            errors.insert(names[0].into(), "is required".into());
            None
        }
    }
}

fn optional_text(
    obj: &Map<String, Value>,
    names: &[&str],
    max_chars: usize,
    errors: &mut BTreeMap<String, String>,
) -> Option<String> {
    text(obj, names, max_chars, errors)
        .flatten()
        .filter(|s| !s.is_empty())
}

fn amount(obj: &Map<String, Value>, errors: &mut BTreeMap<String, String>) -> Option<f64> {
    let field = AMOUNT[0];
    let parsed = match lookup(obj, AMOUNT) {
        None => {
            errors.insert(field.into(), "is required".into());
            return None;
        }
        Some(Value::Number(n)) => n.as_f64(),
        // Dispensers report "5" or "5,5" as often as 5.5.
        Some(Value::String(s)) => s.trim().replace(',', ".").parse::<f64>().ok(),
        Some(_) => None,
    };
    match parsed {
        Some(a) if a.is_finite() && a > 0.0 && a <= MAX_AMOUNT => Some(a),
        Some(_) => {
            errors.insert(
                field.into(),
                format!("must be a positive number no larger than {MAX_AMOUNT}"),
            );
            None
        }
        None => {
            errors.insert(field.into(), "must be a number".into());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> BTreeMap<String, String> {
        match parse_create(body.as_bytes(), "Bennys Auto") {
            Err(CreateError::Fields(f)) => f,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_order_parses() {
        let o = parse_create(
            br#"{"uniqueid":"u1","workshop":"Bennys Auto","worksheet":"558","product_nr":"10","amount":5}"#,
            "Bennys Auto",
        )
        .unwrap();
        assert_eq!((o.uniqueid.as_str(), o.amount), ("u1", 5.0));
        assert_eq!(o.password, None);
    }

    #[test]
    fn the_legacy_double_encoded_body_with_old_field_names_parses() {
        let inner = r#"{"unique_id":"x-9","dealer":"bennys auto","case_nr":558,"product_nr":10,"product_amount":"2,5","username":"u","password":"p"}"#;
        let body = serde_json::to_string(inner).unwrap();
        let o = parse_create(body.as_bytes(), "Bennys Auto").unwrap();
        assert_eq!(o.uniqueid, "x-9");
        assert_eq!(o.worksheet, "558");
        assert_eq!(o.product_nr, "10");
        assert_eq!(o.amount, 2.5);
        assert_eq!(o.password.unwrap().expose(), "p");
    }

    #[test]
    fn every_missing_field_is_named() {
        let f = fields("{}");
        for k in ["uniqueid", "workshop", "worksheet", "product_nr", "amount"] {
            assert_eq!(f.get(k).map(String::as_str), Some("is required"), "{k}");
        }
    }

    #[test]
    fn amounts_must_be_positive_finite_and_sane() {
        for bad in ["0", "-1", "1e9", "\"abc\"", "true"] {
            let body = format!(
                r#"{{"uniqueid":"u","workshop":"Bennys Auto","worksheet":"1","product_nr":"1","amount":{bad}}}"#
            );
            assert!(fields(&body).contains_key("amount"), "{bad}");
        }
    }

    #[test]
    fn an_order_for_another_workshop_is_refused() {
        let f = fields(
            r#"{"uniqueid":"u","workshop":"Other Garage","worksheet":"1","product_nr":"1","amount":1}"#,
        );
        assert!(f["workshop"].contains("Bennys Auto"));
    }

    #[test]
    fn overlong_fields_are_refused() {
        let long = "x".repeat(129);
        let f = fields(&format!(
            r#"{{"uniqueid":"{long}","workshop":"Bennys Auto","worksheet":"1","product_nr":"1","amount":1}}"#
        ));
        assert!(f["uniqueid"].contains("at most 128"));
    }

    #[test]
    fn non_objects_are_malformed() {
        for body in ["[1]", "3", "\"[1]\"", "{", "\"not json\""] {
            assert!(
                matches!(
                    parse_create(body.as_bytes(), "x"),
                    Err(CreateError::Malformed(_))
                ),
                "{body}"
            );
        }
    }
}
