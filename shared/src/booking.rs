//! A LibCal room booking, the payload of a `booking` job: what `POST /bookings` takes (in LibCal's
//! own field names), parsed once into a [`Booking`] or a list of per-field errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};

use crate::validate::{
    CreateError, NO_CONTROL, NOT_BLANK_NO_CONTROL, Text, lookup, optional_text, required_text,
};

/// One booking: who comes, where (`lid`, the LibCal location) and when. Stored, leased and shown
/// as it is: it holds no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Booking {
    /// LibCal's id of the booking: a second booking with the same id is the same job.
    #[serde(rename = "bookId")]
    pub book_id: String,
    /// When it starts: ISO 8601 with the location's offset, as LibCal gives it.
    #[serde(rename = "fromDate")]
    #[schema(format = DateTime)]
    pub from_date: String,
    #[serde(rename = "toDate")]
    #[schema(format = DateTime)]
    pub to_date: String,
    #[serde(rename = "firstName")]
    pub first_name: String,
    #[serde(rename = "lastName")]
    pub last_name: String,
    pub email: String,
    /// The LibCal location id.
    pub lid: u64,
    /// The patron's primary id (trimmed, upper-cased), by which Alma finds the patron; a booking
    /// without one is kept, in `error` with `BOOKING_MISSING_PRIMARY_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_id: Option<String>,
}

impl Booking {
    /// The fields in which a second submission differs: its times or its patron. (Anything else
    /// LibCal says of a booking does not change what is registered at the door.)
    pub fn differences(&self, b: &Booking) -> Vec<&'static str> {
        [
            ("fromDate", self.from_date == b.from_date),
            ("toDate", self.to_date == b.to_date),
            ("lid", self.lid == b.lid),
            ("firstName", self.first_name == b.first_name),
            ("lastName", self.last_name == b.last_name),
            ("email", self.email == b.email),
            ("primary_id", self.primary_id == b.primary_id),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(field, _)| field)
        .collect()
    }

    /// The start and end as seconds since the epoch.
    pub fn epoch_secs(&self) -> Option<(i64, i64)> {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp())
        };
        Some((at(&self.from_date)?, at(&self.to_date)?))
    }
}

const BOOK_ID: Text = Text {
    names: &["bookId"],
    max_chars: 64,
};
const FROM: Text = Text {
    names: &["fromDate"],
    max_chars: 64,
};
const TO: Text = Text {
    names: &["toDate"],
    max_chars: 64,
};
const FIRST: Text = Text {
    names: &["firstName"],
    max_chars: 200,
};
const LAST: Text = Text {
    names: &["lastName"],
    max_chars: 200,
};
const EMAIL: Text = Text {
    names: &["email"],
    max_chars: 254,
};
const PRIMARY_ID: Text = Text {
    names: &["primary_id"],
    max_chars: 64,
};
/// An address as far as the api checks it: one `@` with something on each side.
const EMAIL_PATTERN: &str =
    "^[^@\\u0000-\\u001F\\u007F-\\u009F]+@[^@\\u0000-\\u001F\\u007F-\\u009F]+$";

/// Turns a `POST /bookings` body into a booking. Unknown fields (LibCal sends many) are ignored.
pub fn parse_booking(body: &[u8]) -> Result<Booking, CreateError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| CreateError::Malformed(format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(CreateError::Malformed(
            "body must be a JSON object".to_string(),
        ));
    };
    parse_fields(&obj)
}

fn parse_fields(obj: &Map<String, Value>) -> Result<Booking, CreateError> {
    let mut errors = BTreeMap::new();
    let book_id = required_text(obj, &BOOK_ID, &mut errors);
    let from = date(obj, &FROM, &mut errors);
    let to = date(obj, &TO, &mut errors);
    let first = required_text(obj, &FIRST, &mut errors);
    let last = required_text(obj, &LAST, &mut errors);
    let email = required_text(obj, &EMAIL, &mut errors);
    let lid = lid(obj, &mut errors);
    let primary_id = optional_text(obj, &PRIMARY_ID, &mut errors).map(|p| p.to_uppercase());

    if let Some(e) = &email {
        let parts: Vec<&str> = e.split('@').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            errors.insert(EMAIL.names[0].into(), "must be an e-mail address".into());
        }
    }
    if let (Some((_, f)), Some((_, t))) = (&from, &to)
        && t <= f
    {
        errors.insert(TO.names[0].into(), "must be after fromDate".into());
    }
    match (book_id, from, to, first, last, email, lid) {
        (
            Some(book_id),
            Some((from_date, _)),
            Some((to_date, _)),
            Some(first_name),
            Some(last_name),
            Some(email),
            Some(lid),
        ) if errors.is_empty() => Ok(Booking {
            book_id,
            from_date,
            to_date,
            first_name,
            last_name,
            email,
            lid,
            primary_id,
        }),
        _ => Err(CreateError::Fields(errors)),
    }
}

/// A required date-time with an offset: the text as given, and its instant (epoch seconds).
fn date(
    obj: &Map<String, Value>,
    spec: &Text,
    errors: &mut BTreeMap<String, String>,
) -> Option<(String, i64)> {
    if lookup(obj, spec.names).is_some_and(|v| !v.is_string()) {
        errors.insert(spec.names[0].into(), "must be a string".into());
        return None;
    }
    let text = required_text(obj, spec, errors)?;
    match chrono::DateTime::parse_from_rfc3339(&text) {
        Ok(t) => Some((text, t.timestamp())),
        Err(_) => {
            errors.insert(
                spec.names[0].into(),
                "must be an ISO 8601 date-time with an offset (2026-12-01T13:15:00-05:00)".into(),
            );
            None
        }
    }
}

fn lid(obj: &Map<String, Value>, errors: &mut BTreeMap<String, String>) -> Option<u64> {
    match lookup(obj, &["lid"]) {
        None => {
            errors.insert("lid".into(), "is required".into());
            None
        }
        Some(v) => match v.as_u64().filter(|l| *l >= 1) {
            Some(l) => Some(l),
            None => {
                errors.insert(
                    "lid".into(),
                    "must be a LibCal location id (an integer)".into(),
                );
                None
            }
        },
    }
}

/// The OpenAPI description of what [`parse_booking`] takes, built from the limits it checks.
#[derive(Debug)]
pub struct BookingRequest;

impl utoipa::ToSchema for BookingRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        "BookingRequest".into()
    }
}

impl utoipa::PartialSchema for BookingRequest {
    fn schema() -> RefOr<Schema> {
        let text = |spec: &Text, about: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(spec.max_chars))
                .pattern(Some(NOT_BLANK_NO_CONTROL))
                .description(Some(format!(
                    "{about} At most {} characters.",
                    spec.max_chars
                )))
        };
        let date = |spec: &Text, about: &str| {
            text(spec, about).format(Some(SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
        };
        ObjectBuilder::new()
            .description(Some(
                "One LibCal booking, in LibCal's field names. Fields are trimmed; unknown fields \
                 (LibCal sends many) are ignored.",
            ))
            .property(
                "bookId",
                text(
                    &BOOK_ID,
                    "LibCal's id: a second booking with the same id is the same job.",
                ),
            )
            .property("fromDate", date(&FROM, "When it starts, with the offset."))
            .property("toDate", date(&TO, "When it ends, after fromDate."))
            .property("firstName", text(&FIRST, "The patron's first name."))
            .property("lastName", text(&LAST, "The patron's last name."))
            .property(
                "email",
                text(&EMAIL, "The patron's address.").pattern(Some(EMAIL_PATTERN)),
            )
            .property(
                "lid",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .description(Some("The LibCal location id.")),
            )
            .property(
                "primary_id",
                ObjectBuilder::new()
                    .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
                    .max_length(Some(PRIMARY_ID.max_chars))
                    .pattern(Some(NO_CONTROL))
                    .description(Some(
                        "The patron's primary id (upper-cased). Without one the booking is kept, \
                         in `error` with `BOOKING_MISSING_PRIMARY_ID`.",
                    )),
            )
            .required("bookId")
            .required("fromDate")
            .required("toDate")
            .required("firstName")
            .required("lastName")
            .required("email")
            .required("lid")
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"bookId":"cs_lxjj8ycJ","fromDate":"2026-12-01T13:15:00-05:00","toDate":"2026-12-01T13:30:00-05:00","firstName":"Ann","lastName":"Lee","email":"ann@gwu.edu","lid":8827,"primary_id":" g00000002 ","status":"Confirmed","q12505":"G00000002"}"#;

    fn fields(body: &str) -> BTreeMap<String, String> {
        match parse_booking(body.as_bytes()) {
            Err(CreateError::Fields(f)) => f,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_libcal_booking_parses_and_its_primary_id_is_normalised() {
        let b = parse_booking(GOOD.as_bytes()).unwrap();
        assert_eq!(b.book_id, "cs_lxjj8ycJ");
        assert_eq!(b.lid, 8827);
        assert_eq!(b.primary_id.as_deref(), Some("G00000002"));
        assert_eq!(b.epoch_secs(), Some((1_796_148_900, 1_796_149_800)));
    }

    #[test]
    fn every_missing_field_is_named_and_the_primary_id_may_be_missing() {
        let f = fields("{}");
        for k in [
            "bookId",
            "fromDate",
            "toDate",
            "firstName",
            "lastName",
            "email",
            "lid",
        ] {
            assert!(f.contains_key(k), "{k}: {f:?}");
        }
        assert!(!f.contains_key("primary_id"));
        let mut v: Value = serde_json::from_str(GOOD).unwrap();
        v.as_object_mut().unwrap().remove("primary_id");
        let b = parse_booking(v.to_string().as_bytes()).unwrap();
        assert_eq!(b.primary_id, None);
    }

    #[test]
    fn bad_dates_addresses_and_locations_are_named() {
        for (field, value) in [
            ("fromDate", serde_json::json!("tomorrow")),
            ("fromDate", serde_json::json!("2026-12-01T13:15:00")),
            ("toDate", serde_json::json!("2026-12-01T13:00:00-05:00")),
            ("email", serde_json::json!("ann.gwu.edu")),
            ("email", serde_json::json!("a@b@c")),
            ("lid", serde_json::json!("8827")),
            ("lid", serde_json::json!(0)),
        ] {
            let mut v: Value = serde_json::from_str(GOOD).unwrap();
            v[field] = value.clone();
            assert!(
                fields(&v.to_string()).contains_key(field),
                "{field}={value}"
            );
        }
    }

    #[test]
    fn a_second_submission_differs_only_in_times_or_patron() {
        let a = parse_booking(GOOD.as_bytes()).unwrap();
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.to_date = "2026-12-01T14:00:00-05:00".into();
        b.primary_id = None;
        assert_eq!(a.differences(&b), ["toDate", "primary_id"]);
    }
}
