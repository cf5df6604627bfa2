//! `Definition`: declares a kind at run time, as Kubernetes' CustomResourceDefinition does.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Scope, ValidationError};

/// Declares a new kind: its names, where its objects live, the schema of their `spec`, and
/// the columns `dora get` shows. The Definition's own name is the kind's plural.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionSpec {
    pub names: DefinitionNames,
    /// The partition the kind's objects live in (`cluster`, `zoned`, `workspaced` or
    /// `zonedWorkspaced`). Fixed once defined.
    pub scope: Scope,
    /// A JSON Schema for the objects' `spec`, checked on every write; the default takes any
    /// mapping.
    #[serde(default = "any_object")]
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub schema: Value,
    /// The columns `dora get` shows after NAME, like Kubernetes' `additionalPrinterColumns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<PrinterColumn>,
    /// Whether objects carry a `status` written by a controller.
    #[serde(default)]
    pub status: bool,
}

/// The words that name a defined kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionNames {
    /// The name written in `kind:`: a capital letter, then letters and digits (`Notebook`).
    /// Fixed once defined.
    pub kind: String,
    /// The lowercase plural used in paths and by `dora get` (`notebooks`); also the
    /// Definition's `metadata.name`.
    pub plural: String,
    /// Short names for the command line (`nb`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A column of `dora get`: a header and where its value is read in the object as the API
/// returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrinterColumn {
    /// The header, in capitals (`SIZE`).
    pub name: String,
    /// A JSON pointer into the object (`/spec/size`); a `*` segment reads a field of every item
    /// of a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// A kubectl-style path into the object (`.spec.size`, `.spec.ports[*].port`), instead of
    /// `pointer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// How the value is shown.
    #[serde(default)]
    pub format: ColumnFormat,
    /// Shown only with `-o wide`.
    #[serde(default)]
    pub wide: bool,
}

/// How a defined column's value becomes text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ColumnFormat {
    /// The value itself; lists are joined with commas.
    #[default]
    Text,
    /// The number of items of a list.
    Count,
    /// The keys of a map.
    Keys,
    /// A byte count in binary units (`16Gi`).
    Bytes,
    /// A number with two decimals.
    Decimal,
    /// A time, shown as the time since then (`5m`).
    Age,
    /// A time, shown as the time until then (`in 35s`).
    Until,
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

/// Headers every table has; a definition may not declare them again.
const COMMON_COLUMNS: [&str; 7] = [
    "EVENT",
    "NAME",
    "WORKSPACE",
    "AGE",
    "VERSION",
    "OWNER",
    "LABELS",
];

/// Words that are paths of the API or wildcards, not kinds.
const RESERVED: [&str; 7] = [
    "all", "apply", "events", "tokens", "whoami", "kinds", "queue",
];

/// A kind name (`capital`: a capital letter, then letters and digits) or a plural or alias (a
/// lowercase letter, then lowercase letters and digits), at most 63 characters.
fn word_ok(word: &str, capital: bool) -> bool {
    let mut chars = word.chars();
    let first_ok = |c: char| {
        if capital {
            c.is_ascii_uppercase()
        } else {
            c.is_ascii_lowercase()
        }
    };
    chars.next().is_some_and(first_ok)
        && word.len() <= 63
        && chars.all(|c| {
            c.is_ascii_digit() || c.is_ascii_lowercase() || (capital && c.is_ascii_uppercase())
        })
}

impl PrinterColumn {
    /// The JSON pointer the column reads, from `pointer` or `jsonPath`; the error names the
    /// field of column `index`.
    pub fn pointer(&self, index: usize) -> Result<String, ValidationError> {
        let field = |name: &str| format!("spec.columns[{index}].{name}");
        match (&self.pointer, &self.json_path) {
            (Some(pointer), None) => {
                if !pointer.starts_with('/') || pointer.len() < 2 {
                    return Err(ValidationError::new(
                        field("pointer"),
                        format!("{pointer:?} is not a JSON pointer; write one such as /spec/size"),
                    ));
                }
                Ok(pointer.clone())
            }
            (None, Some(path)) => json_path_pointer(path).ok_or_else(|| {
                ValidationError::new(
                    field("jsonPath"),
                    format!(
                        "{path:?} is not a simple path; write one such as .spec.size or .spec.items[*].name"
                    ),
                )
            }),
            _ => Err(ValidationError::new(
                field("pointer"),
                "give exactly one of pointer (/spec/size) or jsonPath (.spec.size)",
            )),
        }
    }
}

/// `.spec.items[*].name` → `/spec/items/*/name`; `None` for anything but dotted fields and
/// `[N]` / `[*]` subscripts.
fn json_path_pointer(path: &str) -> Option<String> {
    let rest = path.strip_prefix('.')?;
    let mut pointer = String::new();
    for segment in rest.split('.') {
        let (field, subscripts) = match segment.find('[') {
            Some(at) => segment.split_at(at),
            None => (segment, ""),
        };
        if field.is_empty()
            || !field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return None;
        }
        pointer.push('/');
        pointer.push_str(field);
        let mut subscripts = subscripts;
        while let Some(inner) = subscripts.strip_prefix('[') {
            let (index, after) = inner.split_once(']')?;
            if index != "*" && index.parse::<usize>().is_err() {
                return None;
            }
            pointer.push('/');
            pointer.push_str(index);
            subscripts = after;
        }
        if !subscripts.is_empty() {
            return None;
        }
    }
    Some(pointer)
}

impl DefinitionSpec {
    /// Checks what the schema cannot: the words are well formed and distinct, the schema
    /// compiles, the columns are readable. Collisions with other kinds are checked by the
    /// registry ([`crate::registry::check`]).
    pub(crate) fn check(&self) -> Result<(), ValidationError> {
        let names = &self.names;
        if !word_ok(&names.kind, true) {
            return Err(ValidationError::new(
                "spec.names.kind",
                format!(
                    "invalid kind name {:?}; use a capital letter then letters and digits (at most 63), such as Notebook",
                    names.kind
                ),
            ));
        }
        let lower_ok = |word: &str| word_ok(word, false);
        if !lower_ok(&names.plural) {
            return Err(ValidationError::new(
                "spec.names.plural",
                format!(
                    "invalid plural {:?}; use a lowercase letter then lowercase letters and digits (at most 63), such as notebooks",
                    names.plural
                ),
            ));
        }
        let mut seen = vec![names.kind.to_ascii_lowercase()];
        let words = std::iter::once(("spec.names.plural".to_string(), &names.plural)).chain(
            names
                .aliases
                .iter()
                .enumerate()
                .map(|(i, alias)| (format!("spec.names.aliases[{i}]"), alias)),
        );
        for (field, word) in words {
            if !lower_ok(word) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "invalid alias {word:?}; use lowercase letters and digits, starting with a letter"
                    ),
                ));
            }
            if seen.contains(word) {
                return Err(ValidationError::new(
                    field,
                    format!("{word:?} is already one of this kind's names; remove it"),
                ));
            }
            seen.push(word.clone());
        }
        if let Some(word) = seen.iter().find(|w| RESERVED.contains(&w.as_str())) {
            return Err(ValidationError::new(
                "spec.names",
                format!("{word:?} is reserved by the API; choose another name"),
            ));
        }
        if !self.schema.is_object() {
            return Err(ValidationError::new(
                "spec.schema",
                format!("expected a JSON Schema (a mapping), got {}", self.schema),
            ));
        }
        if let Err(e) = jsonschema::validator_for(&self.schema) {
            let at = e.instance_path().as_str().replace('/', ".");
            return Err(ValidationError::new(
                format!("spec.schema{at}"),
                format!("not a valid JSON Schema: {e}"),
            ));
        }
        let mut headers = Vec::new();
        for (index, column) in self.columns.iter().enumerate() {
            let header = column.name.as_str();
            let header_ok = !header.is_empty()
                && header.len() <= 63
                && header
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || " -_/".contains(c));
            if !header_ok {
                return Err(ValidationError::new(
                    format!("spec.columns[{index}].name"),
                    format!(
                        "invalid header {header:?}; use capital letters, digits, spaces, '-', '_' or '/'"
                    ),
                ));
            }
            if COMMON_COLUMNS.contains(&header) || headers.contains(&header) {
                return Err(ValidationError::new(
                    format!("spec.columns[{index}].name"),
                    format!(
                        "every table already has a {header} column, or another column has that header; choose another"
                    ),
                ));
            }
            headers.push(header);
            column.pointer(index)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_become_pointers() {
        assert_eq!(
            json_path_pointer(".spec.size").as_deref(),
            Some("/spec/size")
        );
        assert_eq!(
            json_path_pointer(".spec.ports[*].port").as_deref(),
            Some("/spec/ports/*/port")
        );
        assert_eq!(
            json_path_pointer(".spec.items[0]").as_deref(),
            Some("/spec/items/0")
        );
        assert_eq!(json_path_pointer("spec.size"), None);
        assert_eq!(json_path_pointer(".spec[?(@.x)]"), None);
        assert_eq!(json_path_pointer(".spec..x"), None);
    }
}
