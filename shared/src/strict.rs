//! JSON objects only where a struct is expected. serde's derived `Deserialize` also takes a
//! struct from a JSON array of its fields in order (`["w1", 5]` for `{"worker_id": "w1", "max":
//! 5}`), which the api's OpenAPI document does not allow and no client means; these refuse it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A `T` that was sent as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(OnlyMaps(PhantomData)).map(Object)
    }
}

/// For `#[serde(deserialize_with = "strict::object")]`.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::deserialize(d).map(|o| o.0)
}

/// For `#[serde(deserialize_with = "strict::objects")]` on a `Vec` of structs.
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Object<T>>::deserialize(d).map(|v| v.into_iter().map(|o| o.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LeaseRequest, ReportRequest};

    #[test]
    fn structs_come_only_from_objects() {
        let lease: Object<LeaseRequest> =
            serde_json::from_str(r#"{"worker_id": "w1", "max": 5}"#).unwrap();
        assert_eq!((lease.0.worker_id.as_str(), lease.0.max), ("w1", 5));
        // What serde's derive alone would take.
        assert!(serde_json::from_str::<LeaseRequest>(r#"["w1", 5, 0, 1000]"#).is_ok());
        let err = serde_json::from_str::<Object<LeaseRequest>>(r#"["w1", 5, 0, 1000]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a JSON object"), "{err}");
    }

    #[test]
    fn nested_report_items_come_only_from_objects() {
        let id = "0190f2c4-1a2b-7c3d-8e4f-0123456789ab";
        let item = |detail: &str| {
            format!(
                r#"{{"worker_id": "w", "results": [{{"job_id": "{id}", "lease_id": "{id}",
                    "outcome": {{"kind": "created", "target_ref": "7"}}, "detail": {detail}}}]}}"#
            )
        };
        assert!(serde_json::from_str::<ReportRequest>(&item(r#"{"http_status": 201}"#)).is_ok());
        assert!(serde_json::from_str::<ReportRequest>(&item("[null, null]")).is_err());
        let as_array = format!(
            r#"{{"worker_id": "w", "results": [["{id}", "{id}", {{"kind": "created", "target_ref": "7"}}]]}}"#
        );
        assert!(serde_json::from_str::<ReportRequest>(&as_array).is_err());
    }
}
