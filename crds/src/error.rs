use std::fmt;

/// A problem with one document of a manifest: which document, which field, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ValidationError {
    /// Zero-based index of the document inside the submitted manifest, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// Dotted path of the offending field (`spec.replica.count`); empty for the whole document.
    pub field: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl ValidationError {
    /// An error at `field` with `message`; the document index is filled in by the caller.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            document: None,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, attributed to document `index`.
    pub fn in_document(mut self, index: usize) -> Self {
        self.document = Some(index);
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.document {
            write!(f, "document {}: ", index + 1)?;
        }
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ValidationError {}
