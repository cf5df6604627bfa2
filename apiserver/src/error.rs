use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dora_crds::ValidationError;
use dora_crds::limits::shorten;
use dora_store::{ObjectKey, StoreError};
use serde::Serialize;

/// Every failure the API reports: an HTTP status and a JSON body that says what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// A short machine-readable reason (`Invalid`, `NotFound`, `Conflict`...).
    pub reason: &'static str,
    /// Cut to [`MAX_MESSAGE`] characters when sent, whatever input it quotes.
    #[serde(serialize_with = "short_message")]
    pub message: String,
    /// Index of the offending document in an apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// Dotted path of the offending field, cut to [`MAX_FIELD`] characters when sent.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_field"
    )]
    pub field: Option<String>,
}

/// Most characters of a message an error sends: no answer echoes a large input back.
const MAX_MESSAGE: usize = 1024;
/// Most characters of a field path an error sends.
const MAX_FIELD: usize = 200;

fn short_message<S: serde::Serializer>(message: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&shorten(message, MAX_MESSAGE))
}

fn short_field<S: serde::Serializer>(
    field: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match field {
        Some(field) => serializer.serialize_str(&shorten(field, MAX_FIELD)),
        None => serializer.serialize_none(),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a ApiError,
    status: u16,
}

impl ApiError {
    /// An error with a status, reason and message.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
            document: None,
            field: None,
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 403: valid credentials, not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 404 for an object that does not exist, worded the same on every route: its kind, name
    /// and where it was looked for.
    pub fn object_not_found(key: &ObjectKey) -> Self {
        let mut place = Vec::new();
        if !key.zone.is_empty() {
            place.push(format!("zone {}", key.zone));
        }
        if !key.workspace.is_empty() {
            place.push(format!("workspace {}", key.workspace));
        }
        let place = if place.is_empty() {
            String::new()
        } else {
            format!(" in {}", place.join(", "))
        };
        Self::not_found(format!("{} {:?} not found{place}", key.kind, key.name))
    }

    /// 405 for a method the path does not take.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not allowed on this path; see /openapi.json"),
        )
    }

    /// The same error, with what to do next after its message.
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.message = format!("{}; {hint}", self.message);
        self
    }

    /// 422 about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
        error.field = Some(field.into());
        error
    }

    /// The same error, attributed to document `index`.
    pub fn in_document(mut self, index: usize) -> Self {
        self.document = Some(index);
        self
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let syntax = e.field.is_empty() && e.message.starts_with("invalid ");
        let (status, reason) = if syntax {
            (StatusCode::BAD_REQUEST, "BadRequest")
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, "Invalid")
        };
        ApiError {
            status,
            reason,
            message: e.to_string(),
            document: e.document,
            field: (!e.field.is_empty()).then_some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::AlreadyExists => {
                Self::new(StatusCode::CONFLICT, "AlreadyExists", "already exists")
            }
            StoreError::Conflict { expected, actual } => {
                let mut error = Self::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "stale version: the request is based on version {expected} but the stored version is {actual}; get the resource again and reapply your change"
                    ),
                );
                error.field = Some("metadata.version".into());
                error
            }
            StoreError::Expired(cursor) => Self::new(
                StatusCode::GONE,
                "Expired",
                format!(
                    "resourceVersion {cursor} is older than the change feed keeps; list again and watch from the new resourceVersion"
                ),
            ),
            StoreError::Ahead { cursor, head } => {
                let mut error = Self::bad_request(format!(
                    "resourceVersion {cursor} is ahead of this cluster's newest change ({head}); use a resourceVersion this cluster returned, or leave it out to start from now"
                ));
                error.field = Some("resourceVersion".into());
                error
            }
            StoreError::BadCursor(token) => Self::bad_request(format!(
                "invalid resourceVersion or continue token {token:?}"
            )),
            StoreError::Fenced { .. } => Self::new(StatusCode::CONFLICT, "Fenced", e.to_string()),
            StoreError::Invalid { field, message } => Self::invalid(field, message),
            StoreError::Unavailable(_) | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "store failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "StoreUnavailable",
                    format!("{e}; retry in a few seconds"),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (
            status,
            Json(Body {
                error: &self,
                status: status.as_u16(),
            }),
        )
            .into_response();
        add_status_headers(&mut response);
        response
    }
}

/// Headers every answer with this status carries: `WWW-Authenticate` on 401, `Retry-After`
/// on 503.
pub(crate) fn add_status_headers(response: &mut Response) {
    match response.status() {
        StatusCode::UNAUTHORIZED => {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        _ => {}
    }
}
