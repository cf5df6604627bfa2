use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Kind;

/// Serializes `value` as JSON with object keys sorted at every level.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// The hash that decides whether containers must be replaced: SHA-256 over the canonical JSON
/// of the spec, leaving out fields that must not restart containers (the replica count, scheduling and
/// update strategy).
pub fn spec_hash(kind: Kind, spec: &Value) -> String {
    let mut spec = spec.clone();
    if kind == Kind::Workload
        && let Some(replica) = spec.get_mut("replica").and_then(Value::as_object_mut)
    {
        replica.remove("count");
    }
    if kind == Kind::Workload
        && let Some(spec) = spec.as_object_mut()
    {
        spec.remove("scheduling");
        spec.remove("strategy");
    }
    let digest = Sha256::digest(canonical_json(&spec).as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a = json!({"a": 1, "b": {"c": 2, "d": [1, 2]}});
        let b: Value = serde_json::from_str(r#"{"b": {"d": [1, 2], "c": 2}, "a": 1}"#).unwrap();
        assert_eq!(spec_hash(Kind::Zone, &a), spec_hash(Kind::Zone, &b));
        assert_eq!(canonical_json(&b), r#"{"a":1,"b":{"c":2,"d":[1,2]}}"#);
    }

    #[test]
    fn replica_count_is_left_out_but_other_fields_count() {
        let one = json!({"replica": {"count": 1}, "image": {"image": "a"}});
        let two = json!({"replica": {"count": 2}, "image": {"image": "a"}});
        let other = json!({"replica": {"count": 1}, "image": {"image": "b"}});
        assert_eq!(
            spec_hash(Kind::Workload, &one),
            spec_hash(Kind::Workload, &two)
        );
        assert_ne!(
            spec_hash(Kind::Workload, &one),
            spec_hash(Kind::Workload, &other)
        );
    }
}
