//! Parse, don't validate: `POST /create` bodies become an [`OrderLine`] here, once, or a list of
//! per-field errors that name the field.
//!
//! Accepts what the deployed OilMat client sends: the legacy field names (`unique_id`, `case_nr`,
//! `product_amount`), its `dealer` label, and a body that is a JSON string holding the JSON object.
//!
//! The process is the workshop: `workshop` may be left out, and when it is given it must name this
//! tenant (a misrouted order must not reach another workshop's ERP). The legacy `dealer` is not the
//! workshop: the deployed client sends a fixed label, which the original service only logged.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Number, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

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

/// A text field: canonical name first, then the names the legacy client uses, and its largest
/// length in characters.
pub(crate) struct Text {
    pub names: &'static [&'static str],
    pub max_chars: usize,
}

const UNIQUEID: Text = Text {
    names: &["uniqueid", "unique_id"],
    max_chars: 128,
};
const WORKSHOP: Text = Text {
    names: &["workshop"],
    max_chars: 200,
};
const DEALER: Text = Text {
    names: &["dealer"],
    max_chars: 200,
};
const WORKSHEET: Text = Text {
    names: &["worksheet", "case_nr", "case_id"],
    max_chars: 64,
};
const PRODUCT_NR: Text = Text {
    names: &["product_nr"],
    max_chars: 64,
};
const USERNAME: Text = Text {
    names: &["username"],
    max_chars: 256,
};
const PASSWORD: Text = Text {
    names: &["password"],
    max_chars: 256,
};
const AMOUNT: &[&str] = &["amount", "product_amount"];

/// A parsed `POST /create` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOrder {
    pub order: OrderLine,
    /// Fields the body had that no order field reads, sorted: accepted (old clients send extras)
    /// but named in the answer, so a misspelt optional field does not vanish unseen.
    pub ignored: Vec<String>,
}

/// Every field name an order is read from.
const KNOWN: [&Text; 7] = [
    &UNIQUEID,
    &WORKSHOP,
    &DEALER,
    &WORKSHEET,
    &PRODUCT_NR,
    &USERNAME,
    &PASSWORD,
];

/// Turns a request body into an order line for the instance serving `this_workshop`.
pub fn parse_create(body: &[u8], this_workshop: &str) -> Result<ParsedOrder, CreateError> {
    // serde reads a struct from an array too: only an object is read the plain way.
    let plain = match body.trim_ascii_start().starts_with(b"{") {
        true => serde_json::from_slice::<Plain<'_>>(body).ok(),
        false => None,
    };
    match plain {
        Some(plain) => Ok(ParsedOrder {
            order: parse_fields(&plain, this_workshop)?,
            ignored: Vec::new(),
        }),
        None => parse_any(body, this_workshop),
    }
}

/// An order as the documented client sends it: a JSON object of the canonical fields only, each
/// text a string without escapes. Read straight into these fields, without building the object's
/// map first (parsing took 9,100 instructions an order that way, 5,000 this way); any other
/// body (legacy names, numbers for text, extra or repeated fields, escapes, a JSON string) is
/// read by [`parse_any`], which finds the same order or the same errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain<'a> {
    #[serde(default)]
    uniqueid: Option<&'a str>,
    #[serde(default)]
    workshop: Option<&'a str>,
    #[serde(default)]
    dealer: Option<&'a str>,
    #[serde(default)]
    worksheet: Option<&'a str>,
    #[serde(default)]
    product_nr: Option<&'a str>,
    #[serde(default)]
    amount: Option<Number>,
    #[serde(default)]
    username: Option<&'a str>,
    #[serde(default)]
    password: Option<&'a str>,
}

impl Fields for Plain<'_> {
    fn field(&self, names: &[&str]) -> Field<'_> {
        let text = match names[0] {
            "uniqueid" => self.uniqueid,
            "workshop" => self.workshop,
            "dealer" => self.dealer,
            "worksheet" => self.worksheet,
            "product_nr" => self.product_nr,
            "username" => self.username,
            "password" => self.password,
            "amount" => return self.amount.as_ref().map_or(Field::Absent, Field::Number),
            _ => None,
        };
        text.map_or(Field::Absent, Field::Text)
    }
}

/// Any body [`parse_create`] takes: through the JSON object's map.
fn parse_any(body: &[u8], this_workshop: &str) -> Result<ParsedOrder, CreateError> {
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
    let order = parse_fields(&obj, this_workshop)?;
    let mut ignored: Vec<String> = obj
        .keys()
        .filter(|k| {
            !AMOUNT.contains(&k.as_str()) && !KNOWN.iter().any(|t| t.names.contains(&k.as_str()))
        })
        .cloned()
        .collect();
    ignored.sort();
    Ok(ParsedOrder { order, ignored })
}

fn parse_fields(obj: &impl Fields, this_workshop: &str) -> Result<OrderLine, CreateError> {
    let mut errors = BTreeMap::new();
    let uniqueid = required_text(obj, &UNIQUEID, &mut errors);
    // Given, it must name this tenant: a blank one names nothing.
    let workshop = text(obj, &WORKSHOP, &mut errors).flatten();
    let dealer = optional_text(obj, &DEALER, &mut errors);
    let worksheet = required_text(obj, &WORKSHEET, &mut errors);
    let product_nr = required_text(obj, &PRODUCT_NR, &mut errors);
    let amount = amount(obj, &mut errors);
    let username = optional_text(obj, &USERNAME, &mut errors);
    let password = optional_text(obj, &PASSWORD, &mut errors);

    // The name as the tenant spells it (what clients send) needs no slugging to match.
    if let Some(w) = &workshop
        && (w.is_empty()
            || (w != this_workshop
                && TenantSlug::from_name(w) != TenantSlug::from_name(this_workshop)))
    {
        errors.insert(
            WORKSHOP.names[0].to_string(),
            format!("this is the api of workshop '{this_workshop}', not '{w}'"),
        );
    }
    match (uniqueid, worksheet, product_nr, amount) {
        (Some(uniqueid), Some(worksheet), Some(product_nr), Some(amount)) if errors.is_empty() => {
            Ok(OrderLine {
                uniqueid,
                workshop: workshop.unwrap_or_else(|| this_workshop.to_string()),
                dealer,
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
pub(crate) fn lookup<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| obj.get(*n))
        .filter(|v| !v.is_null())
}

/// Where a body's fields are read from: its JSON object, or an order read straight into its
/// fields ([`Plain`]).
pub(crate) trait Fields {
    /// The field sent under the first of `names` present (`null` is absent).
    fn field(&self, names: &[&str]) -> Field<'_>;
}

/// A field as sent.
pub(crate) enum Field<'a> {
    Absent,
    Text(&'a str),
    Number(&'a Number),
    /// Anything else: `true`, an array, an object.
    Other,
}

impl Fields for Map<String, Value> {
    fn field(&self, names: &[&str]) -> Field<'_> {
        match lookup(self, names) {
            None => Field::Absent,
            Some(Value::String(s)) => Field::Text(s),
            Some(Value::Number(n)) => Field::Number(n),
            Some(_) => Field::Other,
        }
    }
}

pub(crate) fn text(
    obj: &(impl Fields + ?Sized),
    spec: &Text,
    errors: &mut BTreeMap<String, String>,
) -> Option<Option<String>> {
    let field = spec.names[0];
    let s = match obj.field(spec.names) {
        Field::Absent => return Some(None),
        Field::Text(s) => s,
        // The legacy client sends case numbers and product numbers as JSON numbers.
        Field::Number(n) => return Some(Some(n.to_string())),
        Field::Other => {
            errors.insert(field.into(), "must be a string".into());
            return None;
        }
    };
    // Counted as sent, before trimming: the limit the OpenAPI document states.
    if s.chars().count() > spec.max_chars {
        errors.insert(
            field.into(),
            format!("must be at most {} characters", spec.max_chars),
        );
        return None;
    }
    if s.chars().any(char::is_control) {
        errors.insert(field.into(), "must not contain control characters".into());
        return None;
    }
    Some(Some(s.trim().to_string()))
}

pub(crate) fn required_text(
    obj: &(impl Fields + ?Sized),
    spec: &Text,
    errors: &mut BTreeMap<String, String>,
) -> Option<String> {
    match text(obj, spec, errors)? {
        Some(s) if !s.is_empty() => Some(s),
        _ => {
            errors.insert(spec.names[0].into(), "is required".into());
            None
        }
    }
}

pub(crate) fn optional_text(
    obj: &(impl Fields + ?Sized),
    spec: &Text,
    errors: &mut BTreeMap<String, String>,
) -> Option<String> {
    text(obj, spec, errors).flatten().filter(|s| !s.is_empty())
}

fn amount(obj: &impl Fields, errors: &mut BTreeMap<String, String>) -> Option<f64> {
    let field = AMOUNT[0];
    let parsed = match obj.field(AMOUNT) {
        Field::Absent => {
            errors.insert(field.into(), "is required".into());
            return None;
        }
        Field::Number(n) => n.as_f64(),
        // Dispensers report "5" or "5,5" as often as 5.5.
        Field::Text(s) => decimal_text(s),
        Field::Other => None,
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

/// A decimal number as dispensers write it: digits with at most one decimal point or comma, an
/// optional `+`, spaces around. No exponent, no `inf`: nothing a person would type on a pump.
fn decimal_text(s: &str) -> Option<f64> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let separators = t.chars().filter(|c| matches!(c, '.' | ',')).count();
    if separators > 1
        || !t
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | ','))
    {
        return None;
    }
    t.replace(',', ".").parse().ok()
}

/// The OpenAPI description of what [`parse_create`] accepts, built from the limits it checks.
/// The legacy names and the JSON-string form are accepted too, as the description says.
#[derive(Debug)]
pub struct CreateRequest;

/// No control characters (Rust's `char::is_control`), and for required fields, not only spaces.
pub(crate) const NO_CONTROL: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";
pub(crate) const NOT_BLANK_NO_CONTROL: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$";
/// Amounts sent as text that [`decimal_text`] takes and that are over 0 and under 100000.
const AMOUNT_TEXT: &str = "^\\s*[+]?0*([1-9][0-9]{0,4}([.,][0-9]*)?|[.,]0*[1-9][0-9]*)\\s*$";

impl CreateRequest {
    /// A JSON Schema pattern for the `workshop` values the api of `workshop` takes: those with
    /// the same [`TenantSlug`] (ASCII letters and digits ignoring case; any run of other
    /// characters, but no control character, between them and around them).
    pub fn workshop_pattern(workshop: &str) -> String {
        const OTHER: &str = "[^a-zA-Z0-9\\u0000-\\u001F\\u007F-\\u009F]";
        let mut pattern = format!("^{OTHER}*");
        for c in TenantSlug::from_name(workshop).as_str().chars() {
            match c {
                '-' => pattern.push_str(&format!("{OTHER}+")),
                c if c.is_ascii_alphabetic() => {
                    pattern.push_str(&format!("[{c}{}]", c.to_ascii_uppercase()));
                }
                c => pattern.push(c),
            }
        }
        pattern.push_str(&format!("{OTHER}*$"));
        pattern
    }
}

impl utoipa::ToSchema for CreateRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        "CreateRequest".into()
    }
}

impl utoipa::PartialSchema for CreateRequest {
    fn schema() -> RefOr<Schema> {
        let text = |spec: &Text, required: bool, about: &str| {
            let aliases = &spec.names[1..];
            let also = if aliases.is_empty() {
                String::new()
            } else {
                format!(" Also accepted as `{}`.", aliases.join("`, `"))
            };
            let mut types = vec![Type::String, Type::Number];
            if !required {
                // `null` is taken as absent.
                types.push(Type::Null);
            }
            ObjectBuilder::new()
                .schema_type(SchemaType::Array(types))
                .max_length(Some(spec.max_chars))
                .pattern(Some(if required {
                    NOT_BLANK_NO_CONTROL
                } else {
                    NO_CONTROL
                }))
                .description(Some(format!(
                    "{about} At most {} characters; numbers are taken as their text.{also}",
                    spec.max_chars
                )))
        };
        ObjectBuilder::new()
            .description(Some(
                "One OilMat pumping. Fields are trimmed; unknown fields are ignored (the answer's \
                 message names them). The body may also be a JSON string holding this object, as \
                 the deployed client sends it.",
            ))
            .property(
                "uniqueid",
                text(&UNIQUEID, true, "The pumping's id: a second order with the same id is the same job."),
            )
            .property(
                "workshop",
                text(
                    &WORKSHOP,
                    false,
                    "This api's workshop (compared ignoring case and punctuation); an order naming \
                     another is refused. Optional: the api is the workshop.",
                ),
            )
            .property(
                "dealer",
                text(
                    &DEALER,
                    false,
                    "A label the legacy client sends; kept with the job and searchable, never \
                     compared with the workshop.",
                ),
            )
            .property("worksheet", text(&WORKSHEET, true, "The worksheet (case) in the ERP."))
            .property("product_nr", text(&PRODUCT_NR, true, "The ERP's product number."))
            .property(
                "amount",
                ObjectBuilder::new()
                    .schema_type(SchemaType::Array(vec![Type::Number, Type::String]))
                    .exclusive_minimum(Some(0))
                    .maximum(Some(MAX_AMOUNT))
                    .pattern(Some(AMOUNT_TEXT))
                    .description(Some(format!(
                        "How much was pumped: more than 0, at most {MAX_AMOUNT}. A string may use a \
                         decimal comma. Also accepted as `{}`.",
                        AMOUNT[1]
                    ))),
            )
            .property("username", text(&USERNAME, false, "The operator, for ERPs that take per-job credentials."))
            .property(
                "password",
                text(&PASSWORD, false, "The operator's ERP password; only the worker ever sees it.")
                    .write_only(true),
            )
            .required(UNIQUEID.names[0])
            .required(WORKSHEET.names[0])
            .required(PRODUCT_NR.names[0])
            .required(AMOUNT[0])
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> BTreeMap<String, String> {
        match parse_create(body.as_bytes(), "Bennys Auto").map(|p| p.order) {
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
        .unwrap()
        .order;
        assert_eq!((o.uniqueid.as_str(), o.amount), ("u1", 5.0));
        assert_eq!(o.password, None);
    }

    #[test]
    fn an_order_read_straight_into_its_fields_is_what_the_objects_map_gives() {
        let order = |extra: &str| {
            format!(
                r#"{{"uniqueid":"u1","workshop":"Bennys Auto","worksheet":"558","product_nr":"10","amount":5{extra}}}"#
            )
        };
        // What the documented client sends is read the plain way.
        assert!(serde_json::from_slice::<Plain<'_>>(order("").as_bytes()).is_ok());
        let mut bodies: Vec<String> = [
            "",
            r#","dealer":"Gygag","username":"u","password":"p""#,
            r#","dealer":null,"username":"","password":"  ""#,
            r#","workshop":"bennys-auto""#,
            r#","workshop":"Other Garage""#,
            r#","workshop":" ""#,
            r#","note":"x""#,
            r#","unique_id":"u2""#,
            r#","uniqueid":"u3""#,
            r#","case_nr":7"#,
            r#","password":"p\"q""#,
            r#","password":"\u0001""#,
            r#","username":"Bénny Ünal""#,
            r#","username":[1]"#,
        ]
        .iter()
        .map(|extra| order(extra))
        .collect();
        for amount in [
            "0", "-1", "1e9", "5.5", "true", "\"5,5\"", "null", "{}", "100000",
        ] {
            bodies.push(format!(
                r#"{{"uniqueid":"u","worksheet":"1","product_nr":"1","amount":{amount}}}"#
            ));
        }
        for uniqueid in [
            "\"\"",
            "\"  u  \"",
            "null",
            "12",
            &format!("\"{}\"", "é".repeat(129)),
        ] {
            bodies.push(format!(
                r#"{{"uniqueid":{uniqueid},"worksheet":"1","product_nr":"1","amount":1}}"#
            ));
        }
        bodies.extend(["{}", "[]", "3", "{", "\"{}\""].map(String::from));
        bodies.push(serde_json::to_string(&order("")).unwrap());
        for body in &bodies {
            assert_eq!(
                parse_create(body.as_bytes(), "Bennys Auto"),
                parse_any(body.as_bytes(), "Bennys Auto"),
                "{body}"
            );
        }
    }

    #[test]
    fn the_legacy_double_encoded_body_with_old_field_names_parses() {
        let inner = r#"{"unique_id":"x-9","dealer":"Gygag","case_nr":558,"product_nr":10,"product_amount":"2,5","username":"u","password":"p"}"#;
        let body = serde_json::to_string(inner).unwrap();
        let o = parse_create(body.as_bytes(), "Bennys Auto").unwrap().order;
        assert_eq!(o.uniqueid, "x-9");
        assert_eq!(o.worksheet, "558");
        assert_eq!(o.product_nr, "10");
        assert_eq!(o.amount, 2.5);
        assert_eq!(o.password.unwrap().expose(), "p");
        assert_eq!(
            o.dealer.as_deref(),
            Some("Gygag"),
            "a label, not the tenant"
        );
        assert_eq!(o.workshop, "Bennys Auto", "the api is the workshop");
    }

    #[test]
    fn unknown_fields_are_accepted_and_named() {
        let p = parse_create(
            br#"{"uniqueid":"u","worksheet":"1","product_nr":"1","amount":1,"note":"x","usrname":"a"}"#,
            "Bennys Auto",
        )
        .unwrap();
        assert_eq!(p.ignored, ["note", "usrname"]);
        assert_eq!(p.order.username, None);
    }

    #[test]
    fn every_missing_field_is_named() {
        let f = fields("{}");
        for k in ["uniqueid", "worksheet", "product_nr", "amount"] {
            assert_eq!(f.get(k).map(String::as_str), Some("is required"), "{k}");
        }
        assert!(
            !f.contains_key("workshop"),
            "the api is the workshop: {f:?}"
        );
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
        // The documented field is checked even beside a legacy label.
        let f = fields(
            r#"{"uniqueid":"u","workshop":"Other Garage","dealer":"Gygag","worksheet":"1","product_nr":"1","amount":1}"#,
        );
        assert!(f["workshop"].contains("Other Garage"), "{f:?}");
        assert!(!f.contains_key("dealer"), "{f:?}");
        let f = fields(
            r#"{"uniqueid":"u","workshop":" ","worksheet":"1","product_nr":"1","amount":1}"#,
        );
        assert!(f.contains_key("workshop"), "blank names no workshop: {f:?}");
    }

    #[test]
    fn the_tenant_is_named_as_it_spells_itself_or_by_its_slug() {
        for name in [
            "Bennys Auto",
            "bennys auto",
            " BENNYS-AUTO ",
            "Bennys  Auto!",
        ] {
            let body = format!(
                r#"{{"uniqueid":"u","workshop":"{name}","worksheet":"1","product_nr":"1","amount":1}}"#
            );
            let parsed = parse_create(body.as_bytes(), "Bennys Auto");
            assert!(parsed.is_ok(), "{name}: {parsed:?}");
        }
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

    #[test]
    fn the_workshop_pattern_spells_out_the_slug() {
        let other = "[^a-zA-Z0-9\\u0000-\\u001F\\u007F-\\u009F]";
        assert_eq!(
            CreateRequest::workshop_pattern("Bennys Auto 2"),
            format!("^{other}*[bB][eE][nN][nN][yY][sS]{other}+[aA][uU][tT][oO]{other}+2{other}*$")
        );
    }

    #[test]
    fn amounts_as_text_are_plain_decimals() {
        for (text, amount) in [
            ("5", 5.0),
            (" 5,5 ", 5.5),
            ("+.5", 0.5),
            ("12.", 12.0),
            ("007", 7.0),
        ] {
            assert_eq!(decimal_text(text), Some(amount), "{text}");
        }
        for text in [
            "1e3", "inf", "NaN", "1.2.3", "5,5,5", "-5", "", ".", "5 5", "0x10",
        ] {
            assert_eq!(decimal_text(text), None, "{text}");
        }
    }
}
