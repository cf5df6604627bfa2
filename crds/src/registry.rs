//! The registry of kinds defined at run time. Built-in kinds are its fixed entries (see
//! [`Kind`]); `Definition` objects add the others. The API server keeps it in step with the
//! stored Definitions (at start and from the change feed), the CLI fills it from `GET /v1/kinds`.
//!
//! It is process-wide, so that `Kind` stays a `Copy` value that parses (`FromStr`) and answers
//! its facts anywhere: a process serves one cluster (several API servers in one test process
//! see the union of their clusters' definitions). A kind's facts are kept after its definition goes: a `Kind` value still
//! held somewhere answers as before, but names no longer resolve to it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use crate::kind::Info;
use crate::spec::{ColumnFormat, DefinitionSpec};
use crate::{Column, Format, Kind, Scope, ValidationError};

/// What the registry keeps about a defined kind.
struct Entry {
    info: Info,
    columns: &'static [Column],
    validator: Arc<jsonschema::Validator>,
    spec: DefinitionSpec,
}

#[derive(Default)]
struct Registry {
    /// Every kind ever defined in this process, by interned name.
    entries: HashMap<&'static str, Arc<Entry>>,
    /// The kinds defined now.
    active: BTreeSet<&'static str>,
    /// Stored definitions not served, by plural, and why: see [`settle`].
    refused: HashMap<String, String>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(Default::default);

/// Strings that live as long as the process: names, plurals, headers, pointers of defined
/// kinds. They are few, and defining the same kind again reuses them.
static STRINGS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);

fn intern(text: &str) -> &'static str {
    let mut strings = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(interned) = strings.get(text) {
        return interned;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    strings.insert(leaked);
    leaked
}

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(|e| e.into_inner())
}

fn entry(name: &str) -> Option<Arc<Entry>> {
    read().entries.get(name).cloned()
}

/// The facts of defined kind `name`.
pub(crate) fn info(name: &'static str) -> Info {
    entry(name).map_or(
        // Only a `Kind` made by this module can name a kind, so this is not reached.
        Info {
            name,
            plural: name,
            aliases: &[],
            scope: Scope::Cluster,
        },
        |entry| entry.info,
    )
}

/// The defined kind answering to `lower` (a lowercase name, plural or alias), if any.
pub(crate) fn find(lower: &str) -> Option<Kind> {
    let registry = read();
    registry
        .active
        .iter()
        .find(|name| registry.entries[*name].info.answers_to(lower))
        .map(|name| Kind::Defined(name))
}

/// The kinds defined now, by name.
pub fn defined() -> Vec<Kind> {
    read()
        .active
        .iter()
        .map(|name| Kind::Defined(name))
        .collect()
}

/// The columns of defined kind `name`.
pub(crate) fn columns(name: &str) -> &'static [Column] {
    entry(name).map_or(&[], |entry| entry.columns)
}

/// The validator of defined kind `name`'s spec.
pub(crate) fn validator(name: &str) -> Option<Arc<jsonschema::Validator>> {
    entry(name).map(|entry| entry.validator.clone())
}

/// The definition of a defined kind; `None` for a built-in one.
pub fn definition(kind: Kind) -> Option<DefinitionSpec> {
    match kind {
        Kind::Defined(name) => entry(name).map(|entry| entry.spec.clone()),
        _ => None,
    }
}

/// Checks that a definition's words name no other kind and that it changes nothing fixed
/// (kind name, scope) of the kind it defines again. Errors name the field.
pub(crate) fn check(spec: &DefinitionSpec) -> Result<(), ValidationError> {
    let names = &spec.names;
    let words = [
        (
            "spec.names.kind".to_string(),
            names.kind.to_ascii_lowercase(),
        ),
        ("spec.names.plural".to_string(), names.plural.clone()),
    ]
    .into_iter()
    .chain(
        names
            .aliases
            .iter()
            .enumerate()
            .map(|(i, alias)| (format!("spec.names.aliases[{i}]"), alias.clone())),
    );
    for (field, word) in words {
        match Kind::parse(&word) {
            None => {}
            Some(Kind::Defined(other)) => {
                // Undefined meanwhile: the word is free again.
                let Some(entry) = entry(other) else { continue };
                if entry.info.plural != names.plural {
                    return Err(ValidationError::new(
                        field,
                        format!(
                            "{word:?} already names kind {other} (Definition {}); choose another",
                            entry.info.plural
                        ),
                    ));
                }
            }
            Some(built_in) => {
                return Err(ValidationError::new(
                    field,
                    format!("{word:?} already names the built-in kind {built_in}; choose another"),
                ));
            }
        }
    }
    let registry = read();
    let current = registry
        .active
        .iter()
        .map(|name| &registry.entries[name])
        .find(|entry| entry.info.plural == names.plural);
    if let Some(current) = current {
        if current.info.name != names.kind {
            return Err(ValidationError::new(
                "spec.names.kind",
                format!(
                    "Definition {} defines kind {}; a kind's name cannot change (delete the definition and apply it again)",
                    names.plural, current.info.name
                ),
            ));
        }
        if current.info.scope != spec.scope {
            return Err(ValidationError::new(
                "spec.scope",
                format!(
                    "kind {} is {}; a kind's scope cannot change (delete the definition and apply it again)",
                    names.kind,
                    current.info.scope.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn column(column: &crate::spec::PrinterColumn, index: usize) -> Result<Column, ValidationError> {
    let pointers: &'static [&'static str] = Box::leak(Box::new([intern(&column.pointer(index)?)]));
    Ok(Column {
        name: intern(&column.name),
        pointers,
        format: match column.format {
            ColumnFormat::Text => Format::Text,
            ColumnFormat::Count => Format::Count,
            ColumnFormat::Keys => Format::Keys,
            ColumnFormat::Bytes => Format::Bytes,
            ColumnFormat::Decimal => Format::Decimal,
            ColumnFormat::Age => Format::Age,
            ColumnFormat::Until => Format::Until,
        },
        wide: column.wide,
        optional: true,
    })
}

/// Makes the kind `spec` declares usable, or updates it. The spec is checked on its own
/// (names, schema, columns), not against other kinds: that is checked when a Definition is
/// written; a definition read back from the store or the API was checked then.
pub fn define(spec: &DefinitionSpec) -> Result<Kind, ValidationError> {
    let name = intern(&spec.names.kind);
    let unchanged = entry(name).is_some_and(|entry| entry.spec == *spec);
    if !unchanged {
        spec.check()?;
        let validator = jsonschema::validator_for(&spec.schema).map_err(|e| {
            ValidationError::new("spec.schema", format!("not a valid JSON Schema: {e}"))
        })?;
        let aliases: Vec<&'static str> = spec.names.aliases.iter().map(|a| intern(a)).collect();
        let columns = spec
            .columns
            .iter()
            .enumerate()
            .map(|(index, c)| column(c, index))
            .collect::<Result<Vec<Column>, _>>()?;
        let entry = Entry {
            info: Info {
                name,
                plural: intern(&spec.names.plural),
                aliases: Box::leak(aliases.into_boxed_slice()),
                scope: spec.scope,
            },
            columns: Box::leak(columns.into_boxed_slice()),
            validator: Arc::new(validator),
            spec: spec.clone(),
        };
        write().entries.insert(name, Arc::new(entry));
    }
    write().active.insert(name);
    Ok(Kind::Defined(name))
}

/// Why the stored Definition `plural` is not served, when [`settle`] refused it.
pub fn refusal(plural: &str) -> Option<String> {
    read().refused.get(plural).cloned()
}

/// Makes the kinds of the stored `definitions` (each with its creation time) usable, and
/// forgets those of the definitions `gone`. Two definitions may name the same word when
/// they were written at once through two API servers, each of which checked against what it
/// knew: then the older one (the lesser plural on a tie) keeps its kind everywhere, and the
/// other is refused until it no longer collides; [`refusal`] tells why. Returns the refusals
/// not made by the previous call, for the log.
pub fn settle<'a>(
    definitions: impl IntoIterator<Item = (&'a DefinitionSpec, i64)>,
    gone: impl IntoIterator<Item = &'a DefinitionSpec>,
) -> Vec<(String, String)> {
    let mut ordered: Vec<(&DefinitionSpec, i64)> = definitions.into_iter().collect();
    let gone: Vec<&DefinitionSpec> = gone.into_iter().collect();
    // What this call decides: other clusters' definitions in this process keep theirs.
    let decided: Vec<String> = ordered
        .iter()
        .map(|(spec, _)| *spec)
        .chain(gone.iter().copied())
        .map(|spec| spec.names.plural.clone())
        .collect();
    ordered.sort_by(|a, b| (a.1, &a.0.names.plural).cmp(&(b.1, &b.0.names.plural)));
    let mut taken: HashMap<String, &DefinitionSpec> = HashMap::new();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (spec, _) in ordered {
        let words = words(spec);
        match words
            .iter()
            .find_map(|word| taken.get(word).map(|by| (word, by)))
        {
            Some((word, by)) => refused.push((
                spec,
                format!(
                    "{word:?} already names kind {} of the older Definition {}; delete one of them",
                    by.names.kind, by.names.plural
                ),
            )),
            None => {
                taken.extend(words.into_iter().map(|word| (word, spec)));
                accepted.push(spec);
            }
        }
    }
    for spec in gone
        .into_iter()
        .chain(refused.iter().map(|(spec, _)| *spec))
    {
        // A refused definition may share its kind name with the one that keeps it.
        let serving =
            entry(&spec.names.kind).is_some_and(|entry| entry.info.plural == spec.names.plural);
        if serving {
            undefine(spec);
        }
    }
    let mut refusals: Vec<(String, String)> = refused
        .into_iter()
        .map(|(spec, why)| (spec.names.plural.clone(), why))
        .collect();
    for spec in accepted {
        if let Err(error) = define(spec) {
            refusals.push((spec.names.plural.clone(), error.to_string()));
        }
    }
    let mut registry = write();
    let before: HashMap<String, String> = decided
        .iter()
        .filter_map(|plural| registry.refused.remove_entry(plural))
        .collect();
    registry.refused.extend(refusals.iter().cloned());
    refusals.retain(|(plural, why)| before.get(plural) != Some(why));
    refusals
}

/// The words a definition's kind answers to, in lower case.
fn words(spec: &DefinitionSpec) -> Vec<String> {
    let names = &spec.names;
    [names.kind.to_ascii_lowercase(), names.plural.clone()]
        .into_iter()
        .chain(names.aliases.iter().cloned())
        .collect()
}

/// Forgets the kind a definition declared: its names no longer resolve.
pub fn undefine(spec: &DefinitionSpec) {
    write().active.remove(spec.names.kind.as_str());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{parse_resource, validate_spec};

    fn definition(kind: &str, plural: &str, aliases: &[&str]) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Definition",
            "metadata": {"name": plural},
            "spec": {
                "names": {"kind": kind, "plural": plural, "aliases": aliases},
                "scope": "workspaced",
                "schema": {
                    "type": "object",
                    "required": ["size"],
                    "additionalProperties": false,
                    "properties": {"size": {"type": "integer", "minimum": 1}, "image": {"type": "string"}}
                },
                "columns": [{"name": "SIZE", "jsonPath": ".spec.size"}],
                "status": true
            }
        })
    }

    fn define_document(value: serde_json::Value) -> Result<Kind, ValidationError> {
        let document = parse_resource(value)?;
        define(&crate::decode(&document.spec).unwrap())
    }

    #[test]
    fn a_defined_kind_parses_validates_and_has_its_columns() {
        let kind = define_document(definition("Notebook", "notebooks", &["nb"])).unwrap();
        assert_eq!(Kind::parse("nb"), Some(kind));
        assert_eq!(Kind::parse("NOTEBOOK"), Some(kind));
        assert_eq!(
            (kind.plural(), kind.scope()),
            ("notebooks", Scope::Workspaced)
        );
        assert_eq!(kind.columns()[0].pointers, &["/spec/size"]);
        let err = validate_spec(kind, &json!({"size": "big"}))
            .unwrap_err()
            .remove(0);
        assert_eq!(err.field, "spec.size");
        let err = validate_spec(kind, &json!({"size": 1, "colour": 2}))
            .unwrap_err()
            .remove(0);
        assert_eq!(err.field, "spec.colour");
        let err = validate_spec(kind, &json!({})).unwrap_err().remove(0);
        assert_eq!(err.field, "spec.size");
        assert!(validate_spec(kind, &json!({"size": 2})).is_ok());
        let again = define_document(definition("Notebook", "notebooks", &["nb"])).unwrap();
        assert_eq!(
            again.name().as_ptr(),
            kind.name().as_ptr(),
            "the name is interned once"
        );
        undefine(&crate::decode(&definition("Notebook", "notebooks", &[])["spec"]).unwrap());
        assert_eq!(Kind::parse("nb"), None);
        assert_eq!(kind.plural(), "notebooks", "a held kind keeps its facts");
    }

    #[test]
    fn names_that_collide_are_refused_with_their_field() {
        let err = define_document(definition("Widget", "widgets", &["wk"])).unwrap_err();
        assert_eq!(err.field, "spec.names.aliases[0]");
        assert!(err.message.contains("built-in kind Workload"), "{err}");
        let err = define_document(definition("Workload", "workloadz", &[])).unwrap_err();
        assert_eq!(err.field, "spec.names.kind");
        define_document(definition("Gadget", "gadgets", &["gd"])).unwrap();
        let err = define_document(definition("Gizmo", "gizmos", &["gd"])).unwrap_err();
        assert!(
            err.message.contains("kind Gadget (Definition gadgets)"),
            "{err}"
        );
        let err = define_document(definition("Gadget2", "gadgets", &[])).unwrap_err();
        assert_eq!(err.field, "spec.names.kind");
        let mut zoned = definition("Gadget", "gadgets", &["gd"]);
        zoned["spec"]["scope"] = json!("zoned");
        assert_eq!(define_document(zoned).unwrap_err().field, "spec.scope");
    }

    #[test]
    fn the_older_of_two_colliding_definitions_is_served_everywhere() {
        let spec = |kind: &str, plural: &str, aliases: &[&str]| -> DefinitionSpec {
            crate::decode(&definition(kind, plural, aliases)["spec"]).unwrap()
        };
        // Written at once through two API servers: both share the alias `rg`.
        let older = spec("Rig", "rigs", &["rg"]);
        let younger = spec("Rigging", "riggings", &["rg"]);
        for order in [[(&older, 1), (&younger, 2)], [(&younger, 2), (&older, 1)]] {
            let refused = settle(order, []);
            assert_eq!(Kind::parse("rg").map(Kind::name), Some("Rig"));
            assert_eq!(Kind::parse("riggings"), None);
            assert!(refusal("rigs").is_none());
            let why = refusal("riggings").unwrap();
            assert!(why.contains("older Definition rigs"), "{why}");
            // Told once, not again while nothing changes.
            assert!(refused.is_empty() || refused[0].0 == "riggings");
            assert!(settle(order, []).is_empty());
            undefine(&older);
            settle([], []);
        }
        // The same kind name under two plurals: the older keeps it.
        let first = spec("Mast", "masts", &[]);
        let second = spec("Mast", "mastz", &[]);
        settle([(&second, 1)], []);
        settle([(&second, 1), (&first, 0)], []);
        assert_eq!(Kind::parse("mast").map(Kind::plural), Some("masts"));
        assert!(refusal("mastz").is_some());
        // Once the older is deleted, the younger is served.
        settle([(&second, 1)], [&first]);
        assert_eq!(Kind::parse("mast").map(Kind::plural), Some("mastz"));
        assert!(refusal("mastz").is_none());
        undefine(&second);
    }

    #[test]
    fn a_definition_is_checked_field_by_field() {
        let cases = [
            ("/spec/names/kind", json!("notebook"), "spec.names.kind"),
            (
                "/spec/names/plural",
                json!("Note-books"),
                "spec.names.plural",
            ),
            (
                "/spec/names/aliases",
                json!(["tg", "tg"]),
                "spec.names.aliases[1]",
            ),
            ("/spec/names/aliases", json!(["apply"]), "spec.names"),
            ("/spec/scope", json!("galactic"), "spec.scope"),
            (
                "/spec/schema",
                json!({"type": "whatever"}),
                "spec.schema.type",
            ),
            (
                "/spec/columns",
                json!([{"name": "SIZE", "pointer": "spec/size"}]),
                "spec.columns[0].pointer",
            ),
            (
                "/spec/columns",
                json!([{"name": "SIZE", "jsonPath": "spec"}]),
                "spec.columns[0].jsonPath",
            ),
            (
                "/spec/columns",
                json!([{"name": "AGE", "pointer": "/spec/a"}]),
                "spec.columns[0].name",
            ),
            ("/metadata/name", json!("things"), "metadata.name"),
        ];
        for (pointer, value, field) in cases {
            let mut document = definition("Thing", "thingies", &[]);
            *document.pointer_mut(pointer).unwrap() = value;
            let err = parse_resource(document).unwrap_err();
            assert_eq!(err.field, field, "{pointer}: {err}");
        }
    }
}
