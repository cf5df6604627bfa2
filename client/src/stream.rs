//! Answers that stream: NDJSON lines kept to an idle deadline, and watch events.

use std::time::Duration;

use dora_crds::Resource;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// The most a stream the API keeps busy may stay silent: a watch gets a bookmark every 30 s,
/// a download its bytes.
const IDLE: Duration = Duration::from_secs(90);

/// One change a watch reports, and the version a watch resumed after it starts from.
#[derive(Debug, Clone)]
pub enum Event {
    Added {
        object: Box<Resource>,
        version: String,
    },
    Modified {
        object: Box<Resource>,
        version: String,
    },
    /// The object as it last was.
    Deleted {
        object: Box<Resource>,
        version: String,
    },
    /// Nothing changed up to this version.
    Bookmark { version: String },
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    object: Option<Resource>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    error: Option<Value>,
    status: Option<u16>,
}

impl Event {
    /// The event a watch line holds; an `ERROR` line (the version is too old, a right was
    /// lost) is the API's error.
    pub fn parse(line: Value) -> Result<Event, Error> {
        let line: Line = serde_json::from_value(line).map_err(|source| Error::Decode {
            what: "watch event",
            source,
        })?;
        let version = line.resource_version.unwrap_or_default();
        let object = line
            .object
            .map(Box::new)
            .ok_or_else(|| Error::Stream(format!("a {} event without its object", line.kind)));
        match line.kind.as_str() {
            "ADDED" => Ok(Event::Added {
                object: object?,
                version,
            }),
            "MODIFIED" => Ok(Event::Modified {
                object: object?,
                version,
            }),
            "DELETED" => Ok(Event::Deleted {
                object: object?,
                version,
            }),
            "BOOKMARK" => Ok(Event::Bookmark { version }),
            "ERROR" => {
                let body = serde_json::json!({ "error": line.error });
                Err(Error::Api(Box::new(crate::Failure::new(
                    line.status.unwrap_or(500),
                    &body,
                ))))
            }
            other => Err(Error::Stream(format!(
                "a watch event of unknown type {other}"
            ))),
        }
    }

    /// The object an event is about.
    pub fn object(&self) -> Option<&Resource> {
        match self {
            Event::Added { object, .. }
            | Event::Modified { object, .. }
            | Event::Deleted { object, .. } => Some(object),
            Event::Bookmark { .. } => None,
        }
    }

    /// Where the watch stands after this event.
    pub fn version(&self) -> &str {
        match self {
            Event::Added { version, .. }
            | Event::Modified { version, .. }
            | Event::Deleted { version, .. }
            | Event::Bookmark { version } => version,
        }
    }
}

/// `body`, ending with an error when nothing comes for longer than a stream the API keeps busy
/// may stay silent.
pub fn idle_deadline<B: Send + 'static>(
    body: impl Stream<Item = reqwest::Result<B>> + Unpin + Send + 'static,
) -> futures::stream::BoxStream<'static, Result<B, Error>> {
    futures::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match tokio::time::timeout(IDLE, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(Error::Stream(format!("the stream broke: {e}"))), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(Error::Stream(format!(
                    "the API server sent nothing for {} s",
                    IDLE.as_secs()
                ))),
                None,
            )),
        }
    })
    .boxed()
}

/// The JSON values of an NDJSON body, one per line, kept to the idle deadline.
pub(crate) fn ndjson(
    body: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + Send + 'static,
) -> impl Stream<Item = Result<Value, Error>> {
    let mut buffer = Vec::new();
    idle_deadline(body).flat_map(move |chunk| {
        let mut out = Vec::new();
        match chunk {
            Ok(bytes) => {
                buffer.extend_from_slice(&bytes);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    out.push(
                        serde_json::from_slice(&line).map_err(|source| Error::Decode {
                            what: "stream line",
                            source,
                        }),
                    );
                }
            }
            Err(e) => out.push(Err(e)),
        }
        futures::stream::iter(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn lines_split_across_chunks_are_joined() {
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = vec![
            Ok(bytes::Bytes::from_static(b"{\"a\":1}\n{\"b\"")),
            Ok(bytes::Bytes::from_static(b":2}\n\n")),
        ];
        let values: Vec<_> = ndjson(futures::stream::iter(chunks)).collect().await;
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].as_ref().unwrap(), &json!({"a": 1}));
        assert_eq!(values[1].as_ref().unwrap(), &json!({"b": 2}));
    }

    #[test]
    fn watch_lines_become_events_and_errors() {
        let object = json!({"apiVersion": "v1", "kind": "Workload",
            "metadata": {"name": "a", "zone": "default", "workspace": "default"}});
        let added = Event::parse(json!({"type": "ADDED", "object": object,
            "resourceVersion": "41"}))
        .unwrap();
        assert_eq!(added.object().unwrap().metadata.name, "a");
        assert_eq!(added.version(), "41");
        let bookmark = Event::parse(json!({"type": "BOOKMARK", "resourceVersion": "42"}));
        assert!(matches!(bookmark, Ok(Event::Bookmark { version }) if version == "42"));
        let gone = Event::parse(json!({"type": "ERROR", "status": 410,
            "error": {"reason": "Expired", "message": "list again"}}))
        .unwrap_err();
        assert_eq!(gone.status(), Some(410));
        assert_eq!(gone.to_string(), "list again");
    }
}
