//! The job: its identity, its states and what people and workers are shown of it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;
pub use crate::booking::Booking;
pub use crate::records::{Records, RecordsView};

/// A job's public id: a UUID v7, so ids sort by creation time (the queue listing relies on it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(b))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(Self)
    }

    /// When the id was made, in ms since the epoch: a UUID v7 starts with it. That is the job's
    /// creation (within a millisecond), read without its record.
    pub fn created_ms(&self) -> Option<i64> {
        if self.0.get_version_num() != 7 {
            return None;
        }
        let b = self.0.as_bytes();
        Some(i64::from_be_bytes([
            0, 0, b[0], b[1], b[2], b[3], b[4], b[5],
        ]))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease's id: fences reports, so a worker whose lease expired cannot overwrite a newer attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct LeaseId(pub uuid::Uuid);

impl LeaseId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for LeaseId {
    fn default() -> Self {
        Self::new()
    }
}

/// The statuses upstream systems already know, plus `cleared` for jobs an operator removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Placed,
    Processing,
    Created,
    Error,
    Cleared,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Placed,
        Status::Processing,
        Status::Created,
        Status::Error,
        Status::Cleared,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Processing => "processing",
            Status::Created => "created",
            Status::Error => "error",
            Status::Cleared => "cleared",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A dense index, used for per-status counters and as the status byte in store keys.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Waiting or in flight: what counts against the queue's maximum.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Placed | Status::Processing)
    }
}

/// What a job asks the target to do: the payload's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// An OilMat pumping: a line on a worksheet in the workshop's ERP.
    OrderLine,
    /// A LibCal room booking: a visitor pre-registration in PassagePoint.
    Booking,
    /// A page of records from a source (Teamleader), upserted into a database.
    Records,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::OrderLine, JobKind::Booking, JobKind::Records];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::OrderLine => "order_line",
            JobKind::Booking => "booking",
            JobKind::Records => "records",
        }
    }

    /// The name its upstream gives the idempotency key.
    pub fn key_name(self) -> &'static str {
        match self {
            JobKind::OrderLine => "uniqueid",
            JobKind::Booking => "bookId",
            JobKind::Records => "key",
        }
    }
}

/// What a job carries: one variant per kind, tagged with the kind. The job's life cycle (lease,
/// retry, expiry, clear, fencing, log) never looks inside; it asks only for the idempotency key,
/// whether a second submission is the same, the search text and the public view.
///
/// Read by hand (see its `Deserialize`): serde reads an internally tagged enum by first copying
/// the whole map into a tree of its own, since the tag could come last.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    OrderLine(OrderLine),
    Booking(Booking),
    Records(Records),
}

/// [`Payload`] as serde derives its reading: for a map whose tag is not its first key.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TaggedPayload {
    OrderLine(OrderLine),
    Booking(Booking),
    Records(Records),
}

impl From<TaggedPayload> for Payload {
    fn from(p: TaggedPayload) -> Self {
        match p {
            TaggedPayload::OrderLine(o) => Payload::OrderLine(o),
            TaggedPayload::Booking(b) => Payload::Booking(b),
            TaggedPayload::Records(r) => Payload::Records(r),
        }
    }
}

/// Reads a payload whose `kind` comes first, as Ferry writes it (stored records, leases), straight
/// into its variant: decoding a stored job took a sixth fewer instructions. Any other order of
/// keys is read the way serde derives it, through a `serde_json::Value`.
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::MapAccessDeserializer;
        use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

        /// The first key: `None` when it is `kind`, else the key itself.
        struct FirstKey;
        impl<'de> DeserializeSeed<'de> for FirstKey {
            type Value = Option<String>;
            fn deserialize<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                d.deserialize_str(self)
            }
        }
        impl Visitor<'_> for FirstKey {
            type Value = Option<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
                Ok((key != "kind").then(|| key.to_string()))
            }
        }

        struct PayloadVisitor;
        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a payload tagged with its kind")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
                let Some(first) = map.next_key_seed(FirstKey)? else {
                    return Err(de::Error::missing_field("kind"));
                };
                let Some(first) = first else {
                    let kind: JobKind = map.next_value()?;
                    let rest = MapAccessDeserializer::new(map);
                    return Ok(match kind {
                        JobKind::OrderLine => Payload::OrderLine(OrderLine::deserialize(rest)?),
                        JobKind::Booking => Payload::Booking(Booking::deserialize(rest)?),
                        JobKind::Records => Payload::Records(Records::deserialize(rest)?),
                    });
                };
                let mut all = serde_json::Map::new();
                all.insert(first, map.next_value()?);
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    all.insert(k, v);
                }
                TaggedPayload::deserialize(serde_json::Value::Object(all))
                    .map(Payload::from)
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_map(PayloadVisitor)
    }
}

impl Payload {
    pub fn kind(&self) -> JobKind {
        match self {
            Payload::OrderLine(_) => JobKind::OrderLine,
            Payload::Booking(_) => JobKind::Booking,
            Payload::Records(_) => JobKind::Records,
        }
    }

    /// The upstream's idempotency key; unique within its kind.
    pub fn key(&self) -> &str {
        match self {
            Payload::OrderLine(o) => &o.uniqueid,
            Payload::Booking(b) => &b.book_id,
            Payload::Records(r) => &r.key,
        }
    }

    /// The fields in which `other` differs from this payload; none means a second submission of
    /// the same job (a harmless replay). Payloads of different kinds differ in `kind`.
    pub fn differences(&self, other: &Payload) -> Vec<&'static str> {
        match (self, other) {
            (Payload::OrderLine(a), Payload::OrderLine(b)) => a.differences(b),
            (Payload::Booking(a), Payload::Booking(b)) => a.differences(b),
            (Payload::Records(a), Payload::Records(b)) => a.differences(b),
            _ => vec!["kind"],
        }
    }

    /// Whether `needle` (lower-case) occurs in what an operator would search by.
    pub fn matches(&self, needle: &str) -> bool {
        let fields: Vec<&str> = match self {
            Payload::OrderLine(o) => vec![
                &o.uniqueid,
                &o.worksheet,
                &o.product_nr,
                o.dealer.as_deref().unwrap_or(""),
                o.username.as_deref().unwrap_or(""),
            ],
            Payload::Booking(b) => vec![
                &b.book_id,
                &b.first_name,
                &b.last_name,
                &b.email,
                b.primary_id.as_deref().unwrap_or(""),
            ],
            Payload::Records(r) => {
                return [r.key.as_str(), r.resource.as_str()]
                    .into_iter()
                    .chain(r.ids())
                    .any(|f| f.to_lowercase().contains(needle));
            }
        };
        fields.iter().any(|f| f.to_lowercase().contains(needle))
    }

    /// What people are shown of it: never a password.
    pub fn view(&self) -> PayloadView {
        match self {
            Payload::OrderLine(o) => PayloadView::OrderLine(OrderView {
                uniqueid: o.uniqueid.clone(),
                workshop: o.workshop.clone(),
                dealer: o.dealer.clone(),
                worksheet: o.worksheet.clone(),
                product_nr: o.product_nr.clone(),
                amount: o.amount,
                username: o.username.clone(),
            }),
            Payload::Booking(b) => PayloadView::Booking(b.clone()),
            Payload::Records(r) => PayloadView::Records(r.view()),
        }
    }
}

/// What an OilMat pumping asks for: `amount` of `product_nr` on `worksheet` in `workshop`'s ERP.
/// Built only by [`crate::validate::parse_create`], so its fields are always valid. The one
/// shape of an order: parsed, stored and leased to the worker as it is; people see an
/// [`OrderView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub uniqueid: String,
    /// The tenant's workshop: the one the order named, or this api's when it named none.
    pub workshop: String,
    /// The legacy client's `dealer`: a label it sends with every order (a fixed value such as
    /// "Gygag"), kept with the job for people to see and search, never compared with the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dealer: Option<String>,
    pub worksheet: String,
    pub product_nr: String,
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Some ERPs take the operator's own credentials per job (the legacy client sends them).
    /// Stored and leased in the clear (the worker needs it); never in a view.
    #[serde(
        default,
        with = "crate::secret::exposed",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub password: Option<Secret<String>>,
}

impl OrderLine {
    /// The fields in which a repeated `POST /create` differs from this order. The workshop is
    /// this tenant whatever its spelling, and the `dealer` label names no part of the order, so
    /// neither is compared.
    pub fn differences(&self, o: &OrderLine) -> Vec<&'static str> {
        [
            ("worksheet", self.worksheet == o.worksheet),
            ("product_nr", self.product_nr == o.product_nr),
            ("amount", self.amount == o.amount),
            ("username", self.username == o.username),
            ("password", self.password == o.password),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(field, _)| field)
        .collect()
    }
}

/// An order line as people see it: the fields `POST /create` took, never the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub uniqueid: String,
    pub workshop: String,
    /// The label the legacy client sent as `dealer`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dealer: Option<String>,
    pub worksheet: String,
    pub product_nr: String,
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A payload as people see it: an order's fields or a booking's, beside the job's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PayloadView {
    OrderLine(OrderView),
    /// A booking has no secret: people see it whole.
    Booking(Booking),
    /// Records: which ones, not their contents.
    Records(RecordsView),
}

impl PayloadView {
    pub fn order(&self) -> Option<&OrderView> {
        match self {
            PayloadView::OrderLine(o) => Some(o),
            _ => None,
        }
    }

    pub fn booking(&self) -> Option<&Booking> {
        match self {
            PayloadView::Booking(b) => Some(b),
            _ => None,
        }
    }

    /// One line for a table: what the job asks for.
    pub fn summary(&self) -> String {
        match self {
            PayloadView::OrderLine(o) => {
                format!(
                    "{} x {} on worksheet {}",
                    o.amount, o.product_nr, o.worksheet
                )
            }
            PayloadView::Booking(b) => format!(
                "{} {} at {} from {}",
                b.first_name, b.last_name, b.lid, b.from_date
            ),
            PayloadView::Records(r) => format!("{} {}", r.count, r.resource),
        }
    }
}

/// One transition in a job's history, as `GET /jobs/{id}/log` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    #[schema(format = DateTime)]
    pub at: String,
    pub from: Option<Status>,
    pub to: Status,
    pub attempt: u32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// A failed attempt's screenshot and page: `GET /jobs/{id}/artifacts/{name}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

/// A job as people and upstream systems see it: never a password. An order's fields are flat
/// beside the job's (`uniqueid`, `worksheet`, ...), as the deployed clients read them; so are a
/// booking's (`bookId`, `fromDate`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub kind: JobKind,
    #[serde(flatten)]
    pub payload: PayloadView,
    pub status: Status,
    pub attempts: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// Why a `placed` job is not being delivered now, when something holds it back (a stopped
    /// worker, no worker connected, a backoff before its next attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<String>,
}

impl JobView {
    /// The upstream's idempotency key (`uniqueid` or `bookId`).
    pub fn key(&self) -> &str {
        match &self.payload {
            PayloadView::OrderLine(o) => &o.uniqueid,
            PayloadView::Booking(b) => &b.book_id,
            PayloadView::Records(r) => &r.key,
        }
    }
}

/// How many jobs are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub placed: u64,
    pub processing: u64,
    pub created: u64,
    pub error: u64,
    pub cleared: u64,
}

impl Counts {
    /// From counters indexed by [`Status::index`].
    pub fn from_indexed(c: [u64; 5]) -> Self {
        Self {
            placed: c[Status::Placed.index()],
            processing: c[Status::Processing.index()],
            created: c[Status::Created.index()],
            error: c[Status::Error.index()],
            cleared: c[Status::Cleared.index()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_alike_with_its_kind_first_or_anywhere_else() {
        let payloads = [
            Payload::OrderLine(OrderLine {
                uniqueid: "u-\"1\"".into(),
                workshop: "Bennys Auto".into(),
                dealer: Some("Gygag".into()),
                worksheet: "558".into(),
                product_nr: "10".into(),
                amount: 5.5,
                username: None,
                password: Some(Secret::new("pw".into())),
            }),
            Payload::Booking(Booking {
                book_id: "cs_1".into(),
                from_date: "2026-01-05T10:00:00-05:00".into(),
                to_date: "2026-01-05T11:00:00-05:00".into(),
                first_name: "Ann".into(),
                last_name: "Lee".into(),
                email: "ann@example.edu".into(),
                lid: 8827,
                primary_id: None,
            }),
            Payload::Records(Records {
                key: "companies:1".into(),
                resource: "companies".into(),
                records: vec![serde_json::json!({"id": "c1", "kind": "not the tag"})],
            }),
        ];
        for payload in payloads {
            let written = serde_json::to_string(&payload).unwrap();
            assert!(written.starts_with("{\"kind\":"), "{written}");
            let read: Payload = serde_json::from_str(&written).unwrap();
            assert_eq!(read, payload);
            // The same map with its tag last, and read from a `Value`.
            let serde_json::Value::Object(mut fields) = serde_json::to_value(&payload).unwrap()
            else {
                panic!("a payload is a map")
            };
            let kind = fields.remove("kind").unwrap();
            let mut last = serde_json::to_string(&fields).unwrap();
            last.truncate(last.len() - 1);
            last.push_str(&format!(",\"kind\":{kind}}}"));
            assert_eq!(
                serde_json::from_str::<Payload>(&last).unwrap(),
                payload,
                "{last}"
            );
            let value = serde_json::to_value(&payload).unwrap();
            assert_eq!(serde_json::from_value::<Payload>(value).unwrap(), payload);
        }
        for (bad, says) in [
            (
                r#"{"kind":"parcel","uniqueid":"u"}"#,
                "unknown variant `parcel`",
            ),
            (
                r#"{"uniqueid":"u","kind":"parcel"}"#,
                "unknown variant `parcel`",
            ),
            (r#"{"uniqueid":"u"}"#, "missing field `kind`"),
            (r#"{}"#, "missing field `kind`"),
            (
                r#"{"kind":"order_line","uniqueid":"u"}"#,
                "missing field `workshop`",
            ),
        ] {
            let e = serde_json::from_str::<Payload>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_job_id_tells_when_it_was_made() {
        let before = crate::now_ms();
        let id = JobId::new();
        let after = crate::now_ms();
        let made = id.created_ms().unwrap();
        assert!(
            (before..=after).contains(&made),
            "{before} <= {made} <= {after}"
        );
        assert_eq!(JobId::from_bytes([0; 16]).created_ms(), None, "not a v7");
    }
}
