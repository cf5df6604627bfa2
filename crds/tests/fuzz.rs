//! Fuzzing of what users write: manifests (multi-document YAML, JSON), names, kinds, label
//! selectors and durations, from mutated valid manifests and from arbitrary text. Each
//! property runs `PROPTEST_CASES` cases (256 unless set); `scripts/fuzz N` runs N each in
//! release mode. No input may panic or take a second; a failure is shrunk, printed and kept
//! in `fuzz.proptest-regressions` beside this file, to be turned into a test of its own.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use dora_crds::{Kind, Selector, parse_documents, parse_resource, validate_name};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Valid manifests, the mutations' starting points.
const YAML_SEEDS: &[&str] = &[
    include_str!("../../manifests/bootstrap.yaml"),
    include_str!("../../examples/cron.yaml"),
    include_str!("../../examples/definition.yaml"),
    include_str!("../../examples/docker-workload.yaml"),
    include_str!("../../examples/gpu-workload.yaml"),
    include_str!("../../examples/hollow-gpu.yaml"),
    include_str!("../../examples/original-manifest.yaml"),
    include_str!("../../examples/process-workload.yaml"),
    include_str!("../../examples/sweep.yaml"),
    include_str!("../../examples/user-with-credits.yaml"),
    include_str!("../../examples/volumes.yaml"),
];

/// The same manifests as JSON arrays.
static JSON_SEEDS: LazyLock<Vec<String>> = LazyLock::new(|| {
    YAML_SEEDS
        .iter()
        .map(|seed| {
            let documents: Vec<Value> = dora_crds::split_documents(seed)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            serde_json::to_string_pretty(&documents).unwrap()
        })
        .collect()
});

/// What YAML and JSON parsers treat specially, for the mutations to insert.
const TOKENS: &[&str] = &[
    "---\n",
    "--- ",
    "...\n",
    ": ",
    ":",
    "- ",
    "&a ",
    "*a",
    "&b [*a, *a, *a]\n",
    "<<: *a\n",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "\\",
    "\n",
    "  ",
    "\t",
    "# ",
    "!!str ",
    "!!binary ",
    "!!int ",
    "!local ",
    "%YAML 1.2\n",
    "? ",
    "| ",
    ">- ",
    "~",
    "null",
    "true",
    "no",
    "1e400",
    "-0",
    "0x1F",
    "0o17",
    ".inf",
    ".nan",
    "18446744073709551616",
    "-9223372036854775809",
    "500m",
    "1.5Gi",
    "99999Ti",
    "\u{feff}",
    "\u{0}",
    "\u{85}",
    "\u{2028}",
    "é",
    "\u{1F600}",
    "\\u0000",
    "\\ud800",
    "kind: ",
    "apiVersion: v1\n",
    "metadata:\n  name: x\n",
    "spec:\n",
    "labels: {a: b}\n",
    "items: ",
    "Workload",
    "User",
    "Role",
    "Definition",
    "All",
];

/// One change to a manifest; positions and lengths wrap around its length.
#[derive(Debug, Clone)]
enum Edit {
    Insert { at: usize, token: usize },
    Delete { at: usize, len: u8 },
    Duplicate { at: usize, len: u8 },
    Byte { at: usize, byte: u8 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Edit::Insert { at, token }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, len)| Edit::Delete { at, len }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Byte { at, byte }),
    ]
}

/// `seed` with `edits` made to its bytes, read as UTF-8 (what the API reads a body as).
fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for edit in edits {
        let at = |at: usize| at % (bytes.len() + 1);
        match *edit {
            Edit::Insert { at: a, token } => {
                let a = at(a);
                bytes.splice(a..a, TOKENS[token].bytes());
            }
            Edit::Delete { at: a, len } => {
                let a = at(a);
                let end = (a + usize::from(len)).min(bytes.len());
                bytes.drain(a..end);
            }
            Edit::Duplicate { at: a, len } => {
                let a = at(a);
                let end = (a + usize::from(len)).min(bytes.len());
                let copy = bytes[a..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Edit::Byte { at: a, byte } => {
                if !bytes.is_empty() {
                    let a = at(a) % bytes.len();
                    bytes[a] = byte;
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutated_yaml() -> impl Strategy<Value = String> {
    (0..YAML_SEEDS.len(), prop::collection::vec(edit(), 0..8))
        .prop_map(|(seed, edits)| mutate(YAML_SEEDS[seed], &edits))
}

fn mutated_json() -> impl Strategy<Value = String> {
    (0..YAML_SEEDS.len(), prop::collection::vec(edit(), 0..8))
        .prop_map(|(seed, edits)| mutate(&JSON_SEEDS[seed], &edits))
}

/// Short text made mostly of what YAML and JSON give meaning to.
fn structural_text() -> impl Strategy<Value = String> {
    "[-:{}\\[\\],&*!|>'\"#%@`?~. \\n\\ta-z0-9]{0,300}"
}

/// Parses `text` as `dora apply` and the API's apply route do, and checks what came out: no
/// panic, no input taking a second, an error for every document that is not valid, and a
/// valid document that parses again to itself.
fn check_manifest(text: &str) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let documents = parse_documents(text);
    prop_assert!(
        started.elapsed() < Duration::from_secs(1),
        "parsing took {:?}",
        started.elapsed()
    );
    for document in documents {
        match document {
            Ok(document) => {
                let again = parse_resource(json!({
                    "apiVersion": "v1",
                    "kind": document.kind.name(),
                    "metadata": document.metadata,
                    "spec": document.spec,
                }));
                let again = again.map_err(|e| {
                    TestCaseError::fail(format!("{document:?} does not parse again: {e}"))
                })?;
                prop_assert_eq!(again.spec, document.spec);
                prop_assert_eq!(again.metadata, document.metadata);
            }
            Err(error) => prop_assert!(!error.message.is_empty()),
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn mutated_yaml_manifests(text in mutated_yaml()) {
        check_manifest(&text)?;
    }

    #[test]
    fn mutated_json_manifests(text in mutated_json()) {
        check_manifest(&text)?;
    }

    #[test]
    fn structural_text_as_manifests(text in structural_text()) {
        check_manifest(&text)?;
    }

    #[test]
    fn names_are_valid_exactly_when_the_rule_says(name in "[a-z0-9.A-Z_/ -]{0,6}|\\PC{0,260}") {
        let rule = !name.is_empty()
            && name.len() <= 253
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        prop_assert_eq!(validate_name("metadata.name", &name).is_ok(), rule);
        if let Some(kind) = Kind::parse(&name) {
            prop_assert_eq!(Kind::parse(kind.plural()), Some(kind));
            prop_assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
    }

    #[test]
    fn label_selectors_parse_or_say_why(
        text in "([a-z0-9./_-]{0,6}|=|==|!=|!| in | notin |\\(|\\)|,| ){0,16}|\\PC{0,80}",
        labels in prop::collection::btree_map("[a-z./-]{0,4}", "[a-z0-9]{0,3}", 0..4),
    ) {
        match Selector::parse(&text) {
            Ok(selector) => {
                let _ = selector.matches(&labels);
                let _ = selector.matches(&BTreeMap::new());
            }
            Err(e) => prop_assert!(!e.problem.is_empty()),
        }
    }

    #[test]
    fn durations_parse_or_not(text in "[0-9]{0,22}[smhdx]?|\\PC{0,12}") {
        if let Some(duration) = dora_crds::Duration::parse(&text) {
            prop_assert!(text.trim().len() >= 2, "{:?} -> {:?}", text, duration);
        }
    }
}
