//! What a call to the API can come to besides success.

use std::time::Duration;

use serde_json::Value;

/// A failed call to the API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot make a client (a CA that is not PEM, say).
    #[error("{0}")]
    Config(String),
    /// No connection, or it broke before an answer came.
    #[error("cannot reach the API server at {url}; is it running?")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the client's deadline.
    #[error("the API server at {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    /// The API answered with an error.
    #[error("{0}")]
    Api(Box<Failure>),
    /// A stream (a watch, an NDJSON answer) broke, went silent or sent what is not JSON.
    #[error("{0}")]
    Stream(String),
    /// A successful answer that does not read as what was asked.
    #[error("the API server sent an unreadable {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// An error answer of the API: its status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: u16,
    /// The API's short reason (`Invalid`, `NotFound`, `Conflict`, `OutOfCredit`...).
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The dotted path of the field at fault.
    pub field: Option<String>,
    /// Which document of an apply, from 0.
    pub document: Option<u64>,
}

impl Failure {
    /// The failure an answer with `status` and JSON `body` carries.
    pub fn new(status: u16, body: &Value) -> Failure {
        let error = &body["error"];
        let text = |name: &str| error[name].as_str().map(str::to_string);
        Failure {
            status,
            reason: text("reason"),
            message: text("message"),
            field: text("field"),
            document: error["document"].as_u64(),
        }
    }
}

impl Error {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(failure) => Some(failure.status),
            _ => None,
        }
    }

    /// The API's reason of an error answer.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Api(failure) => failure.reason.as_deref(),
            _ => None,
        }
    }

    /// Whether the object is not there (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the write lost a race or its precondition (409).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// One line a person can act on: the document and field at fault, then the API's message.
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(message) = &self.message else {
            return write!(f, "the API answered {}", self.status);
        };
        if let Some(index) = self.document
            && !message.starts_with("document ")
        {
            write!(f, "document {}: ", index + 1)?;
        }
        if let Some(field) = &self.field
            && !message.contains(field.as_str())
        {
            write!(f, "{field}: ")?;
        }
        f.write_str(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_answer_names_the_document_and_field() {
        let body = json!({"error": {"reason": "Invalid", "message": "must be at least 1",
            "field": "spec.replica.count", "document": 1}, "status": 422});
        let error = Error::Api(Box::new(Failure::new(422, &body)));
        assert_eq!(
            error.to_string(),
            "document 2: spec.replica.count: must be at least 1"
        );
        assert_eq!(error.reason(), Some("Invalid"));
        assert!(!error.is_not_found());
        let bare = Error::Api(Box::new(Failure::new(502, &Value::Null)));
        assert_eq!(bare.to_string(), "the API answered 502");
    }
}
