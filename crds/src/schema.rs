//! JSON Schemas of the kinds' specs, and validation of a spec against them.

use std::collections::HashMap;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::spec::*;
use crate::{Kind, ValidationError};

/// The JSON Schema of a spec type, as Dora checks specs against it (an explicit `null` is
/// refused rather than taken as a missing field).
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    forbid_null(&mut schema);
    schema
}

/// Optional fields are simply left out of manifests; an explicit `null` is rejected so that
/// the error names the field instead of an `anyOf` branch.
fn forbid_null(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let single = types.remove(0);
            map.insert("type".into(), single);
        }
    }
    if let Some(Value::Array(branches)) = map.get_mut("anyOf") {
        branches.retain(|b| b.get("type").is_none_or(|t| t != "null"));
        if branches.len() == 1
            && let Some(Value::Object(only)) = branches.pop()
        {
            map.remove("anyOf");
            for (key, value) in only {
                map.entry(key).or_insert(value);
            }
        }
    }
    for value in map.values_mut() {
        match value {
            Value::Object(_) => forbid_null(value),
            Value::Array(items) => items.iter_mut().for_each(forbid_null),
            _ => {}
        }
    }
}

/// The JSON Schema of `kind`'s spec; `None` for read-only views, which have no spec.
pub fn kind_schema(kind: Kind) -> Option<Value> {
    Some(match kind {
        Kind::Zone => schema_of::<ZoneSpec>(),
        Kind::Workspace => schema_of::<WorkspaceSpec>(),
        Kind::Role => schema_of::<RoleSpec>(),
        Kind::User => schema_of::<UserSpec>(),
        Kind::Storage => schema_of::<StorageSpec>(),
        Kind::Volume => schema_of::<VolumeSpec>(),
        Kind::Node => schema_of::<NodeSpec>(),
        Kind::Resourcecredit => schema_of::<ResourcecreditSpec>(),
        Kind::Usercredit => schema_of::<UsercreditSpec>(),
        Kind::Workload => schema_of::<WorkloadSpec>(),
        Kind::Container => schema_of::<ContainerSpec>(),
        Kind::Token => schema_of::<TokenSpec>(),
        Kind::Definition => schema_of::<DefinitionSpec>(),
        Kind::Defined(_) => return crate::registry::definition(kind).map(|d| d.schema),
        Kind::Gpu | Kind::Cpu => return None,
    })
}

fn validators() -> &'static HashMap<Kind, jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<Kind, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .filter_map(|kind| {
                let schema = kind_schema(kind)?;
                let validator = jsonschema::validator_for(&schema)
                    .unwrap_or_else(|e| panic!("the built-in schema of {kind} is invalid: {e}"));
                Some((kind, validator))
            })
            .collect()
    })
}

/// Validates `spec` for `kind` and returns it normalized (numeric strings as numbers, defaults
/// filled in), or every problem found, each naming its field under `spec.`.
pub fn validate_spec(kind: Kind, spec: &Value) -> Result<Value, Vec<ValidationError>> {
    if let Kind::Defined(name) = kind {
        return validate_defined(name, spec);
    }
    let Some(validator) = validators().get(&kind) else {
        return Err(vec![ValidationError::new(
            "kind",
            format!("{kind} is a read-only view and cannot be applied"),
        )]);
    };
    let errors: Vec<ValidationError> = validator.iter_errors(spec).map(|e| describe(&e)).collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let result = match kind {
        Kind::Zone => normalize::<ZoneSpec>(spec, |_| Ok(())),
        Kind::Workspace => normalize::<WorkspaceSpec>(spec, |_| Ok(())),
        Kind::Role => normalize::<RoleSpec>(spec, RoleSpec::check),
        Kind::User => normalize::<UserSpec>(spec, UserSpec::check),
        Kind::Storage => normalize::<StorageSpec>(spec, |_| Ok(())),
        Kind::Volume => {
            normalize::<VolumeSpec>(spec, |v| crate::validate_name("spec.storage", &v.storage))
        }
        Kind::Node => normalize::<NodeSpec>(spec, |_| Ok(())),
        Kind::Resourcecredit => normalize::<ResourcecreditSpec>(spec, |_| Ok(())),
        Kind::Usercredit => normalize::<UsercreditSpec>(spec, |_| Ok(())),
        Kind::Workload => normalize::<WorkloadSpec>(spec, WorkloadSpec::check),
        Kind::Container => normalize::<ContainerSpec>(spec, |c| c.template.check()),
        Kind::Token => normalize::<TokenSpec>(spec, |_| Ok(())),
        Kind::Definition => normalize::<DefinitionSpec>(spec, |d| {
            d.check()?;
            crate::registry::check(d)
        }),
        Kind::Gpu | Kind::Cpu | Kind::Defined(_) => unreachable!("views have no validator"),
    };
    result.map_err(|e| vec![e])
}

/// A checker of specs against `schema` (a definition's, before it is defined): it answers the
/// first problem of a spec, naming its field under `spec.`.
pub fn spec_checker(
    schema: &Value,
) -> Result<impl Fn(&Value) -> Option<ValidationError>, ValidationError> {
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        ValidationError::new("spec.schema", format!("not a valid JSON Schema: {e}"))
    })?;
    Ok(move |spec: &Value| validator.iter_errors(spec).next().map(|e| describe(&e)))
}

/// A defined kind's spec is checked against the schema its definition declares, and kept as
/// written.
fn validate_defined(name: &str, spec: &Value) -> Result<Value, Vec<ValidationError>> {
    let Some(validator) = crate::registry::validator(name) else {
        return Err(vec![ValidationError::new(
            "kind",
            format!("kind {name} is no longer defined"),
        )]);
    };
    let errors: Vec<ValidationError> = validator.iter_errors(spec).map(|e| describe(&e)).collect();
    if errors.is_empty() {
        Ok(spec.clone())
    } else {
        Err(errors)
    }
}

fn normalize<T: DeserializeOwned + Serialize>(
    spec: &Value,
    check: impl FnOnce(&T) -> Result<(), ValidationError>,
) -> Result<Value, ValidationError> {
    let typed: T = serde_json::from_value(spec.clone())
        .map_err(|e| ValidationError::new("spec", e.to_string()))?;
    check(&typed)?;
    serde_json::to_value(&typed).map_err(|e| ValidationError::new("spec", e.to_string()))
}

/// Turns a JSON pointer (`/config/env/0`) under `spec` into `spec.config.env[0]`.
fn field_path(pointer: &str) -> String {
    let mut path = String::from("spec");
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            path.push_str(&format!("[{segment}]"));
        } else {
            path.push('.');
            path.push_str(&segment);
        }
    }
    path
}

fn type_name(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => article(&t.to_string()),
        TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|t| article(&t.to_string())).collect();
            names.join(" or ")
        }
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        "integer" => "a whole number".into(),
        "number" => "a number".into(),
        "string" => "a string".into(),
        "boolean" => "true or false".into(),
        other => other.into(),
    }
}

fn describe(error: &jsonschema::ValidationError<'_>) -> ValidationError {
    let field = field_path(error.instance_path().as_str());
    let got = error.instance();
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let field = format!("{field}.{}", unexpected.join(","));
            return ValidationError::new(field, "unknown field; remove it or check its spelling");
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            return ValidationError::new(format!("{field}.{name}"), "required field is missing");
        }
        ValidationErrorKind::Type { kind } => format!("expected {}, got {got}", type_name(kind)),
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> = match options.as_ref() {
                Value::Array(items) => items.iter().map(Value::to_string).collect(),
                other => vec![other.to_string()],
            };
            format!("expected one of {}, got {got}", options.join(", "))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("expected a value matching {pattern}, got {got}")
        }
        ValidationErrorKind::Minimum { limit } => format!("expected a value ≥ {limit}, got {got}"),
        ValidationErrorKind::Maximum { limit } => format!("expected a value ≤ {limit}, got {got}"),
        _ => error.to_string(),
    };
    ValidationError::new(field, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn first_error(kind: Kind, spec: Value) -> ValidationError {
        validate_spec(kind, &spec).unwrap_err().remove(0)
    }

    #[test]
    fn every_stored_kind_has_a_schema() {
        for kind in Kind::ALL {
            assert_eq!(kind_schema(kind).is_some(), !kind.is_view(), "{kind}");
        }
    }

    #[test]
    fn workload_normalizes_count_and_command() {
        let spec =
            json!({"replica": {"count": "2"}, "driver": "Process", "config": {"cmd": "sleep 10"}});
        let normalized = validate_spec(Kind::Workload, &spec).unwrap();
        assert_eq!(normalized["replica"]["count"], json!(2));
        assert_eq!(normalized["config"]["cmd"], json!("sleep 10"));
        assert_eq!(normalized["config"]["restartPolicy"], json!("Never"));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = first_error(
            Kind::Workload,
            json!({"replica": {"count": 1}, "image": {"image": "x", "pul": 1}}),
        );
        assert_eq!(err.field, "spec.image.pul");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn mistyped_field_says_what_is_expected() {
        let err = first_error(
            Kind::Workload,
            json!({"replica": {"count": "many"}, "image": {"image": "x"}}),
        );
        assert_eq!(err.field, "spec.replica.count");
        assert!(err.message.contains("many"), "{err}");
        let err = first_error(
            Kind::Workload,
            json!({"replica": {"count": 1}, "image": {"image": "x"}, "config": {"restartPolicy": "Sometimes"}}),
        );
        assert_eq!(err.field, "spec.config.restartPolicy");
        assert!(err.message.contains("\"OnFailure\""), "{err}");
    }

    #[test]
    fn missing_required_field_is_named() {
        let err = first_error(Kind::Workload, json!({"image": {"image": "x"}}));
        assert_eq!(err.field, "spec.replica");
        let err = first_error(Kind::Storage, json!({"kind": "NFS"}));
        assert_eq!(err.field, "spec.mountpath");
    }

    #[test]
    fn semantic_checks_name_their_field() {
        let err = first_error(Kind::Workload, json!({"replica": {"count": 1}}));
        assert_eq!(err.field, "spec.image.image");
        let err = first_error(
            Kind::Workload,
            json!({"replica": {"count": 1}, "image": {"image": "x"}, "config": {"env": ["A=1", "bad"]}}),
        );
        assert_eq!(err.field, "spec.config.env[1]");
        let err = first_error(Kind::Role, json!({"permission": {"Pod": ["Get"]}}));
        assert_eq!(err.field, "spec.permission.Pod");
    }

    #[test]
    fn cpu_selector_accepts_millicores() {
        let spec = json!({"replica": {"count": 1}, "image": {"image": "x"}, "selectors": {"cpu": {"product_name": "All", "count": "500m"}}});
        let normalized = validate_spec(Kind::Workload, &spec).unwrap();
        assert_eq!(normalized["selectors"]["cpu"]["count"], json!("500m"));
    }
}
