//! `dora explain KIND[.field.path]`: a kind's fields, read from the JSON Schema its spec is
//! validated with, printed as kubectl explains.

use std::fmt::Write;

use anyhow::bail;
use dora_crds::Kind;
use serde_json::{Map, Value};

use super::kind;
use crate::args::{ExplainArgs, Global};

/// The fields every resource has around its spec.
const ENVELOPE: [(&str, &str, &str); 5] = [
    ("apiVersion", "string", "The version of the API: v1."),
    ("kind", "string", "The kind of the resource."),
    (
        "metadata",
        "Object",
        "Name, zone, workspace and labels; the API adds uid, version, generation, specHash, owner, created and updated.",
    ),
    ("spec", "Object", "What the resource should be."),
    (
        "status",
        "Object",
        "What Dora reports (read-only): desired, computed and observed columns.",
    ),
];

pub async fn run(global: &Global, args: ExplainArgs) -> anyhow::Result<()> {
    let (kind_text, path) = match args.field.split_once('.') {
        Some((kind, path)) => (kind, path.split('.').collect::<Vec<_>>()),
        None => (args.field.as_str(), Vec::new()),
    };
    let kind = kind(global, kind_text).await?;
    print!("{}", explain(kind, &path)?);
    Ok(())
}

fn explain(kind: Kind, path: &[&str]) -> anyhow::Result<String> {
    let mut out = format!(
        "KIND:     {}\nVERSION:  {}\n\n",
        kind.name(),
        dora_crds::API_VERSION
    );
    let Some((first, rest)) = path.split_first() else {
        out.push_str("DESCRIPTION:\n");
        let root = dora_crds::kind_schema(kind);
        let about = root
            .as_ref()
            .and_then(|s| s["description"].as_str())
            .unwrap_or("A read-only view computed from what the nodes report.");
        indent(&mut out, about, 5);
        out.push_str("\nFIELDS:\n");
        for (name, type_name, about) in ENVELOPE {
            if name == "spec" && root.is_none() {
                continue;
            }
            let _ = writeln!(out, "   {name}\t<{type_name}>");
            indent(&mut out, about, 5);
            out.push('\n');
        }
        return Ok(out);
    };
    let Some(&(_, type_name, about)) = ENVELOPE.iter().find(|(name, _, _)| name == first) else {
        bail!(
            "field {first:?} does not exist in {}; its fields are: {}",
            kind.name(),
            ENVELOPE.map(|(name, _, _)| name).join(", ")
        );
    };
    let root = match dora_crds::kind_schema(kind) {
        Some(root) if *first == "spec" => root,
        _ if rest.is_empty() => {
            let _ = writeln!(out, "FIELD:    {first} <{type_name}>\n\nDESCRIPTION:");
            indent(&mut out, about, 5);
            return Ok(out);
        }
        _ => bail!(
            "{}.{first} has no schema to explain further; see `dora get {} NAME -o yaml`",
            kind.name().to_ascii_lowercase(),
            kind.name().to_ascii_lowercase()
        ),
    };
    let mut node = resolve(&root, &root);
    let mut walked = format!("{}.spec", kind.name().to_ascii_lowercase());
    let mut name = "spec".to_string();
    for segment in rest {
        let properties = fields_of(&root, &node);
        let Some(child) = properties.get(*segment) else {
            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
            if known.is_empty() {
                bail!("{walked} has no fields; {segment:?} does not exist");
            }
            bail!(
                "field {segment:?} does not exist in {walked}; its fields are: {}",
                known.join(", ")
            );
        };
        node = resolve(&root, child);
        walked.push('.');
        walked.push_str(segment);
        name = segment.to_string();
    }
    let _ = writeln!(out, "FIELD:    {name} <{}>\n", type_of(&root, &node));
    out.push_str("DESCRIPTION:\n");
    indent(
        &mut out,
        node["description"].as_str().unwrap_or("<no description>"),
        5,
    );
    if let Some(values) = choices(&root, &node) {
        indent(&mut out, &format!("One of: {}.", values.join(", ")), 5);
    }
    let fields = fields_of(&root, &node);
    if !fields.is_empty() {
        out.push_str("\nFIELDS:\n");
        let required = required_of(&root, &node);
        for (field, schema) in &fields {
            let schema = resolve(&root, schema);
            let mark = if required.contains(field) {
                " -required-"
            } else {
                ""
            };
            let _ = writeln!(out, "   {field}\t<{}>{mark}", type_of(&root, &schema));
            indent(
                &mut out,
                schema["description"].as_str().unwrap_or("<no description>"),
                5,
            );
            out.push('\n');
        }
    }
    Ok(out)
}

fn indent(out: &mut String, text: &str, by: usize) {
    for line in text.lines() {
        let _ = writeln!(out, "{:by$}{line}", "");
    }
}

/// A schema with its `$ref` (and a single `allOf` branch) followed; its own description wins.
fn resolve(root: &Value, schema: &Value) -> Value {
    let mut schema = schema.clone();
    for _ in 0..16 {
        let target = match (&schema["$ref"], &schema["allOf"]) {
            (Value::String(reference), _) => reference.clone(),
            (_, Value::Array(branches)) if branches.len() == 1 => {
                match branches[0]["$ref"].as_str() {
                    Some(reference) => reference.to_string(),
                    None => break,
                }
            }
            _ => break,
        };
        let Some(found) = target
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
        else {
            break;
        };
        let mut merged = found.clone();
        if let (Value::Object(merged), Value::Object(own)) = (&mut merged, &schema) {
            for (key, value) in own {
                if key != "$ref" && key != "allOf" {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        schema = merged;
    }
    schema
}

/// The fields of an object schema, or of the items of a list of objects.
fn fields_of(root: &Value, schema: &Value) -> Map<String, Value> {
    if let Some(properties) = schema["properties"].as_object() {
        return properties.clone();
    }
    if schema["items"].is_object() {
        return fields_of(root, &resolve(root, &schema["items"]));
    }
    Map::new()
}

fn required_of(root: &Value, schema: &Value) -> Vec<String> {
    let schema = if schema["properties"].is_object() {
        schema.clone()
    } else {
        resolve(root, &schema["items"])
    };
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The values an enumeration takes, from `enum` or from `oneOf` branches of constants.
fn choices(root: &Value, schema: &Value) -> Option<Vec<String>> {
    if let Some(values) = schema["enum"].as_array() {
        return Some(values.iter().map(text_of).collect());
    }
    let branches = schema["oneOf"].as_array().or(schema["anyOf"].as_array())?;
    let mut values = Vec::new();
    for branch in branches {
        let branch = resolve(root, branch);
        match (&branch["const"], branch["enum"].as_array()) {
            (Value::Null, Some(listed)) => values.extend(listed.iter().map(text_of)),
            (Value::Null, None) => values.push(format!("<{}>", type_of(root, &branch))),
            (constant, _) => values.push(text_of(constant)),
        }
    }
    Some(values)
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// kubectl's type words: `string`, `integer`, `boolean`, `Object`, `[]string`,
/// `map[string]string`.
fn type_of(root: &Value, schema: &Value) -> String {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        ["array"] => format!("[]{}", type_of(root, &resolve(root, &schema["items"]))),
        ["object"] if schema["properties"].is_object() => "Object".into(),
        ["object"] => match &schema["additionalProperties"] {
            Value::Object(_) => format!(
                "map[string]{}",
                type_of(root, &resolve(root, &schema["additionalProperties"]))
            ),
            _ => "Object".into(),
        },
        [single] => (*single).to_string(),
        [] if schema["oneOf"].is_array() || schema["anyOf"].is_array() => {
            let values = choices(root, schema).unwrap_or_default();
            if values.iter().all(|v| !v.starts_with('<')) {
                "string".into()
            } else {
                values
                    .iter()
                    .map(|v| v.trim_matches(['<', '>']).to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            }
        }
        [] => "Object".into(),
        many => many.join(" or "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_a_field_and_an_unknown_field() {
        let top = explain(Kind::Workload, &[]).unwrap();
        assert!(
            top.contains("KIND:     Workload") && top.contains("   spec\t<Object>"),
            "{top}"
        );
        let count = explain(Kind::Workload, &["spec", "replica", "count"]).unwrap();
        assert!(count.contains("FIELD:    count <"), "{count}");
        let replica = explain(Kind::Workload, &["spec", "replica"]).unwrap();
        assert!(replica.contains("   count\t<"), "{replica}");
        let error = explain(Kind::Workload, &["spec", "replicas"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"replicas\" does not exist in workload.spec")
                && error.contains("replica,"),
            "{error}"
        );
        let gpu = explain(Kind::Gpu, &[]).unwrap();
        assert!(!gpu.contains("   spec\t"), "{gpu}");
    }
}
