//! Limits on what one manifest may hold, so that no input, however crafted, costs more than a
//! bounded amount of memory and time to refuse, and no error echoes more than a short prefix
//! of it.

use std::borrow::Cow;

use serde_json::Value;

use crate::ValidationError;

/// Most documents in one manifest (one apply).
pub const MAX_DOCUMENTS: usize = 1000;
/// Deepest nesting of mappings and sequences in a document.
pub const MAX_DEPTH: usize = 32;
/// Most mappings, sequences and scalars in one document.
pub const MAX_NODES: usize = 100_000;
/// Most events YAML aliases may replay in one document (an alias bomb stops here).
pub const MAX_ALIAS_EVENTS: usize = 10_000;
/// Most labels on an object.
pub const MAX_LABELS: usize = 64;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 253;
/// Most annotations on an object.
pub const MAX_ANNOTATIONS: usize = 256;
/// Most bytes of annotation keys and values together on an object.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// Longest annotation key.
pub const MAX_ANNOTATION_KEY: usize = 253;
/// Most characters of input an error quotes.
pub const QUOTED_CHARS: usize = 64;

/// `text` cut to at most `max` characters, saying how long it was when cut.
pub fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len())),
    }
}

/// Input quoted in an error: a short prefix, Debug-quoted.
pub fn quote(text: &str) -> String {
    match shorten(text, QUOTED_CHARS) {
        Cow::Borrowed(whole) => format!("{whole:?}"),
        Cow::Owned(_) => {
            let end = text
                .char_indices()
                .nth(QUOTED_CHARS)
                .map_or(text.len(), |(end, _)| end);
            format!("{:?}… ({} bytes)", &text[..end], text.len())
        }
    }
}

/// Checks a parsed document against [`MAX_DEPTH`] and [`MAX_NODES`] (JSON input; the YAML
/// parser enforces both as it reads).
pub fn check_size(value: &Value) -> Result<(), ValidationError> {
    let mut nodes = 0usize;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(ValidationError::new(
                "",
                format!("the document holds more than {MAX_NODES} values; split it"),
            ));
        }
        if depth > MAX_DEPTH {
            return Err(ValidationError::new(
                "",
                format!("the document nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|item| (item, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// The error of a manifest with more than [`MAX_DOCUMENTS`] documents.
pub fn too_many_documents() -> ValidationError {
    ValidationError::new(
        "",
        format!(
            "the manifest holds more than {MAX_DOCUMENTS} documents, the most one apply takes; split it into several files"
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn long_input_is_quoted_by_its_prefix() {
        assert_eq!(quote("short"), "\"short\"");
        let long = "é".repeat(1000);
        let quoted = quote(&long);
        assert!(quoted.len() < 200, "{quoted}");
        assert!(quoted.ends_with("… (2000 bytes)"), "{quoted}");
    }

    #[test]
    fn deep_or_large_documents_are_refused() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        let error = check_size(&deep).unwrap_err();
        assert!(error.message.contains("deeper than 32"), "{error}");
        let wide = Value::Array(vec![json!(1); MAX_NODES]);
        assert!(check_size(&wide).unwrap_err().message.contains("more than"));
        assert!(check_size(&json!({"a": [1, 2, {"b": "c"}]})).is_ok());
    }
}
