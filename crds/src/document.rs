//! Parsing manifests: multi-document YAML or JSON into validated documents.

use serde_json::{Map, Value};

use crate::{API_VERSION, Kind, Metadata, ValidationError, validate_name, validate_spec};

/// One validated document of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Zero-based position among the manifest's non-empty documents.
    pub index: usize,
    pub kind: Kind,
    pub metadata: Metadata,
    /// The spec, normalized (defaults filled in, numeric strings as numbers).
    pub spec: Value,
}

const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// Parses a manifest: YAML with `---` separators, a JSON object, a JSON array of objects, or a
/// list object (`items`). Each document is validated on its own: one bad document does not hide
/// the others.
pub fn parse_documents(text: &str) -> Vec<Result<Document, ValidationError>> {
    split_documents(text)
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            raw.and_then(parse_resource)
                .map(|mut document| {
                    document.index = index;
                    document
                })
                .map_err(|e| e.in_document(index))
        })
        .collect()
}

/// Splits a manifest into its documents, unvalidated; [`parse_resource`] validates each.
pub fn split_documents(text: &str) -> Vec<Result<Value, ValidationError>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Array(items)) => items.into_iter().map(Ok).collect(),
            Ok(Value::Object(mut list)) if list.get("items").is_some_and(Value::is_array) => {
                match list.remove("items") {
                    Some(Value::Array(items)) => items.into_iter().map(Ok).collect(),
                    _ => Vec::new(),
                }
            }
            Ok(value) => vec![Ok(value)],
            Err(e) => vec![Err(ValidationError::new("", format!("invalid JSON: {e}")))],
        };
    }
    split_yaml(text)
        .into_iter()
        .filter_map(|(first_line, chunk)| match from_yaml::<Value>(&chunk) {
            Ok(Value::Null) => None,
            Ok(value) => Some(Ok(value)),
            Err(e) => Some(Err(ValidationError::new(
                "",
                format!("invalid YAML (document starting at line {first_line}): {e}"),
            ))),
        })
        .collect()
}

/// Reads YAML as YAML 1.2 does: only `true` and `false` are booleans, so a name such as `n`,
/// `no` or `on` stays a string (YAML 1.1's "Norway problem").
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
}

/// Splits YAML text on `---` lines, keeping the 1-based line each document starts on.
fn split_yaml(text: &str) -> Vec<(usize, String)> {
    let mut documents = vec![(1, String::new())];
    for (number, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line == "...";
        if is_separator {
            documents.push((number + 2, String::new()));
        } else if let Some((_, current)) = documents.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.retain(|(_, chunk)| {
        chunk
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    documents
}

/// Validates one parsed document.
pub fn parse_resource(value: Value) -> Result<Document, ValidationError> {
    let Value::Object(mut object) = value else {
        return Err(ValidationError::new(
            "",
            "expected a mapping with apiVersion, kind, metadata and spec",
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str()))
    {
        return Err(ValidationError::new(
            unknown.clone(),
            "unknown field; a document has apiVersion, kind, metadata and spec",
        ));
    }
    match object.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            return Err(ValidationError::new(
                "apiVersion",
                format!("expected \"{API_VERSION}\", got {other}"),
            ));
        }
        None => {
            return Err(ValidationError::new(
                "apiVersion",
                format!("required field is missing; use \"{API_VERSION}\""),
            ));
        }
    }
    let kind: Kind = match object.get("kind") {
        Some(Value::String(text)) => text.parse()?,
        Some(other) => {
            return Err(ValidationError::new(
                "kind",
                format!("expected a string, got {other}"),
            ));
        }
        None => return Err(ValidationError::new("kind", "required field is missing")),
    };
    if kind.is_view() {
        return Err(ValidationError::new(
            "kind",
            format!("{kind} is a read-only view of node hardware and cannot be applied"),
        ));
    }
    if kind.is_system() {
        return Err(ValidationError::new(
            "kind",
            format!(
                "{kind} resources are made by Dora itself; apply a Workload (or a User, for credits) instead"
            ),
        ));
    }
    let metadata = parse_metadata(kind, object.remove("metadata"))?;
    let spec = match object.remove("spec") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(spec) => spec,
    };
    let spec = validate_spec(kind, &spec).map_err(|mut errors| errors.remove(0))?;
    if kind == Kind::Definition && spec["names"]["plural"] != metadata.name.as_str() {
        return Err(ValidationError::new(
            "metadata.name",
            format!(
                "a Definition is named after the kind's plural: use {} (spec.names.plural)",
                spec["names"]["plural"]
            ),
        ));
    }
    Ok(Document {
        index: 0,
        kind,
        metadata,
        spec,
    })
}

fn parse_metadata(kind: Kind, value: Option<Value>) -> Result<Metadata, ValidationError> {
    let value = value.ok_or_else(|| {
        ValidationError::new(
            "metadata",
            "required field is missing; it needs at least a name",
        )
    })?;
    if !value.is_object() {
        return Err(ValidationError::new(
            "metadata",
            format!("expected a mapping, got {value}"),
        ));
    }
    if value.get("name").is_none() {
        return Err(ValidationError::new(
            "metadata.name",
            "required field is missing",
        ));
    }
    crate::lifecycle::check_raw_owners(&value)?;
    let mut metadata: Metadata = serde_json::from_value(value)
        .map_err(|e| ValidationError::new("metadata", e.to_string()))?;
    if kind == Kind::Resourcecredit {
        crate::validate_product_name("metadata.name", &metadata.name)?;
    } else {
        validate_name("metadata.name", &metadata.name)?;
    }
    crate::lifecycle::check(kind, &mut metadata)?;
    let scope = kind.scope();
    if !scope.has_zone() {
        metadata.zone = None;
    }
    if !scope.has_workspace() {
        metadata.workspace = None;
    }
    if let Some(zone) = &metadata.zone {
        validate_name("metadata.zone", zone)?;
    }
    if let Some(workspace) = &metadata.workspace {
        validate_name("metadata.workspace", workspace)?;
    }
    for (key, value) in &metadata.labels {
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if !key_ok {
            return Err(ValidationError::new(
                format!("metadata.labels.{key}"),
                "invalid label key; use at most 63 letters, digits, '.', '_', '-' or '/'",
            ));
        }
        if value.len() > 253 {
            return Err(ValidationError::new(
                format!("metadata.labels.{key}"),
                "label value is longer than 253 characters",
            ));
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_words_of_yaml_1_1_stay_strings() {
        let documents = split_documents("kind: Zone\nmetadata: {name: n, labels: {on: no}}\n");
        let value = documents[0].as_ref().unwrap();
        assert_eq!(value["metadata"]["name"], "n");
        assert_eq!(value["metadata"]["labels"]["on"], "no");
        let flag: Value = from_yaml("a: true\nb: yes\n").unwrap();
        assert_eq!(flag, serde_json::json!({"a": true, "b": "yes"}));
    }

    #[test]
    fn parses_multi_document_yaml_with_original_fields() {
        let text = r#"
# a comment before the first document
apiVersion: v1
kind: wk
metadata:
  name: train
  group: alice
spec:
  replica: {count: "2"}
  image: {image: busybox}
  config: {cmd: ["sleep", "10"]}
---
---
apiVersion: v1
kind: Workspace
metadata: {name: alice}
"#;
        let docs: Vec<Document> = parse_documents(text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].kind, Kind::Workload);
        assert_eq!(docs[0].metadata.workspace.as_deref(), Some("alice"));
        assert_eq!(docs[0].spec["replica"]["count"], 2);
        assert_eq!(docs[1].index, 1);
        assert_eq!(docs[1].kind, Kind::Workspace);
    }

    #[test]
    fn each_document_reports_its_own_error() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Zone\nmetadata: {name: Bad_Name}\n---\napiVersion: v1\nkind: Zone\nmetadata: {name: ok}\n";
        let results = parse_documents(text);
        let first = results[0].as_ref().unwrap_err();
        assert_eq!((first.document, first.field.as_str()), (Some(0), "kind"));
        let second = results[1].as_ref().unwrap_err();
        assert_eq!(
            (second.document, second.field.as_str()),
            (Some(1), "metadata.name")
        );
        assert!(results[2].is_ok());
    }

    #[test]
    fn yaml_syntax_errors_are_reported_per_document() {
        let results = parse_documents(
            "apiVersion: v1\nkind: Zone\nmetadata: {name: a}\n---\nkind: [unclosed\n",
        );
        assert!(results[0].is_ok());
        let err = results[1].as_ref().unwrap_err();
        assert!(err.message.contains("invalid YAML"), "{err}");
    }

    #[test]
    fn json_arrays_and_unknown_top_level_fields() {
        let results = parse_documents(
            r#"[{"apiVersion":"v1","kind":"zone","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Zone","metadata":{"name":"b"},"extra":1}]"#,
        );
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().field, "extra");
    }

    #[test]
    fn metadata_errors_name_the_field() {
        let err = parse_resource(serde_json::json!({"apiVersion":"v1","kind":"Zone","metadata":{"name":"a","colour":"red"}})).unwrap_err();
        assert_eq!(err.field, "metadata");
        assert!(err.message.contains("colour"), "{err}");
        let err = parse_resource(
            serde_json::json!({"apiVersion":"v2","kind":"Zone","metadata":{"name":"a"}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "apiVersion");
        let err = parse_resource(
            serde_json::json!({"apiVersion":"v1","kind":"GPU","metadata":{"name":"a"}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "kind");
    }
}
