//! The Dora resource model: the document envelope, every built-in kind as a typed spec with a
//! JSON Schema, kinds defined at run time (the registry), validation whose errors name the document and the field, and spec hashing.

mod columns;
mod document;
mod error;
mod hash;
mod kind;
mod lifecycle;
mod meta;
mod name;
pub mod phase;
mod quantity;
pub mod registry;
mod schema;
mod selector;
pub mod spec;
pub mod status;

pub use columns::{Column, Format};
pub use document::{Document, from_yaml, parse_documents, parse_resource, split_documents};
pub use error::ValidationError;
pub use hash::{canonical_json, spec_hash};
pub use kind::{Kind, Scope};
pub use lifecycle::{MAX_ANNOTATIONS_BYTES, OwnerReference};
pub use meta::{Metadata, Resource};
pub use name::{validate_name, validate_product_name};
pub use quantity::{Bytes, Count, Duration, MilliCpu};
pub use schema::{kind_schema, schema_of, spec_checker, validate_spec};
pub use selector::{Selector, SelectorError};

/// The only `apiVersion` Dora accepts.
pub const API_VERSION: &str = "v1";

/// Encodes a typed spec or status as the JSON value stored.
pub fn encode<T: serde::Serialize>(value: &T) -> serde_json::Result<serde_json::Value> {
    serde_json::to_value(value)
}

/// Decodes a typed spec or status from a stored JSON value without copying it.
pub fn decode<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> serde_json::Result<T> {
    T::deserialize(value)
}

/// Decodes a status column that may not be written yet: `None` when it is `null` or does not
/// decode. Controllers read unwritten columns thousands of times a second; this skips building
/// an error message for each.
pub fn decode_written<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Option<T> {
    if value.is_null() {
        return None;
    }
    T::deserialize(value).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::status::{ContainerReport, ContainerState};

    #[test]
    fn a_status_column_decodes_only_once_written_and_well_formed() {
        assert_eq!(
            decode_written::<ContainerReport>(&serde_json::Value::Null),
            None
        );
        assert_eq!(
            decode_written::<ContainerReport>(&json!({"state": "NoSuchState"})),
            None
        );
        let report = ContainerReport {
            node: "n1".into(),
            epoch: 3,
            state: ContainerState::Running,
            ..ContainerReport::default()
        };
        let written = encode(&report).unwrap();
        assert_eq!(decode_written::<ContainerReport>(&written), Some(report));
    }
}
