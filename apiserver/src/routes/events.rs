//! `GET /v1/events`: events of a zone, optionally of one kind, workspace or resource; with
//! `watch=true`, followed as NDJSON.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::Verb;
use dora_store::{Event, EventQuery, EventType, KeyParts, ObjectKey};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::params::{NoParams, Params};
use super::watch::{Feed, ndjson};
use super::{flag, json_response, parse_limit};
use crate::state::AppState;
use crate::{ApiError, Identity};

/// The most events one answer holds.
const MAX_EVENTS: usize = 1000;

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    /// The zone (default: the caller's).
    zone: Option<String>,
    /// Only events of this kind.
    kind: Option<String>,
    /// Only events of this workspace.
    workspace: Option<String>,
    /// Only events of objects of this name.
    name: Option<String>,
    /// Most events in one answer.
    #[schemars(with = "Option<u32>", range(min = 1, max = MAX_EVENTS))]
    limit: Option<String>,
    /// Only events after this one (an event's `resourceVersion`).
    after: Option<String>,
    /// Follow new events as NDJSON.
    #[schemars(with = "Option<bool>")]
    watch: Option<String>,
}

fn visible(state: &AppState, identity: &Identity, event: &Event) -> bool {
    let Some(kind) = Kind::parse(&event.kind) else {
        return identity.system;
    };
    identity.system
        || state.service.directory.allows(
            &identity.user,
            Verb::Event,
            kind,
            &event.zone,
            &event.workspace,
        )
}

pub(super) async fn events(
    identity: Identity,
    State(state): State<AppState>,
    Params(params): Params<EventParams>,
) -> Result<Response, ApiError> {
    let kind = params
        .kind
        .as_deref()
        .map(|text| {
            Kind::parse(text).ok_or_else(|| ApiError::bad_request(format!("unknown kind {text:?}")))
        })
        .transpose()?;
    let zone = match kind {
        Some(kind) if !kind.scope().has_zone() => String::new(),
        _ => params
            .zone
            .clone()
            .or(identity.zone.clone())
            .unwrap_or_default(),
    };
    if let Some(kind) = kind {
        let somewhere = identity.system
            || state
                .service
                .directory
                .allows_somewhere(&identity.user, Verb::Event, kind, &zone);
        if !somewhere {
            return Err(ApiError::forbidden(format!(
                "user {} may not see events of {kind}",
                identity.user
            )));
        }
    }
    let query = EventQuery {
        zone,
        kind: kind.map(|k| k.name().to_string()),
        workspace: params.workspace.clone(),
        name: params.name.clone(),
        after: params.after.clone(),
        limit: parse_limit(params.limit.as_deref(), 100, MAX_EVENTS)?,
    };
    let events: Vec<Event> = state
        .service
        .store
        .events(&query)
        .await?
        .into_iter()
        .filter(|e| visible(&state, &identity, e))
        .collect();
    if !flag(params.watch.as_deref())? {
        let items = fold(&events);
        return Ok(json_response(
            StatusCode::OK,
            &json!({"apiVersion": dora_crds::API_VERSION, "kind": "EventList", "items": items}),
        ));
    }
    let mut series = Series::default();
    let mut initial = Vec::new();
    for event in &events {
        initial.extend(serde_json::to_vec(&series.render(event)).unwrap_or_default());
        initial.push(b'\n');
    }
    let after = events
        .last()
        .map(|e| e.id.clone())
        .or(query.after.clone())
        .or_else(|| Some(uuid::Uuid::now_v7().to_string()));
    let feed = EventFeed {
        state: state.clone(),
        identity: identity.clone(),
        query: EventQuery { after, ..query },
        series,
    };
    Ok(ndjson(state, identity, initial, feed, None))
}

/// What makes two events the same, to be told once with a count: the object, type, reason
/// and message (Kubernetes' event series).
type SeriesKey = (String, String, String, String, String, String, String);

fn series_key(event: &Event) -> SeriesKey {
    (
        event.zone.clone(),
        event.kind.clone(),
        event.workspace.clone(),
        event.name.clone(),
        serde_json::to_string(&event.event_type).unwrap_or_default(),
        event.reason.clone(),
        event.message.clone(),
    )
}

/// Events in time order, the same ones folded into their last occurrence with how many there
/// were and when the first was.
fn fold(events: &[Event]) -> Vec<serde_json::Value> {
    let mut series: HashMap<SeriesKey, (u64, i64)> = HashMap::new();
    for event in events {
        let entry = series.entry(series_key(event)).or_insert((0, event.time));
        entry.0 += 1;
    }
    let mut seen: HashMap<SeriesKey, u64> = HashMap::new();
    let mut items = Vec::new();
    for event in events {
        let key = series_key(event);
        let (count, first) = series.get(&key).copied().unwrap_or((1, event.time));
        let seen = seen.entry(key).or_default();
        *seen += 1;
        if *seen == count {
            items.push(render(event, count, first));
        }
    }
    items
}

/// The events a watch has told, to count repeats in what it tells next.
#[derive(Default)]
struct Series(HashMap<SeriesKey, (u64, i64)>);

impl Series {
    /// The most series a watch remembers; past it, counts start over.
    const MAX: usize = 10_000;

    fn render(&mut self, event: &Event) -> serde_json::Value {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let entry = self.0.entry(series_key(event)).or_insert((0, event.time));
        entry.0 += 1;
        render(event, entry.0, entry.1)
    }
}

fn render(event: &Event, count: u64, first: i64) -> serde_json::Value {
    let key: ObjectKey = KeyParts {
        kind: event.kind.clone(),
        scope: Kind::parse(&event.kind).map_or(dora_crds::Scope::Cluster, Kind::scope),
        zone: event.zone.clone(),
        workspace: event.workspace.clone(),
        name: event.name.clone(),
    }
    .into();
    json!({
        "id": event.id,
        "time": crate::render::timestamp(event.time),
        "type": event.event_type,
        "count": count,
        "firstTime": crate::render::timestamp(first),
        "reason": event.reason,
        "message": event.message,
        "component": event.component,
        "object": crate::render::tombstone(&key),
    })
}

struct EventFeed {
    state: AppState,
    identity: Identity,
    query: EventQuery,
    series: Series,
}

impl Feed for EventFeed {
    async fn next_lines(&mut self) -> Result<Vec<u8>, ApiError> {
        let events = self.state.service.store.events(&self.query).await?;
        let mut out = Vec::new();
        for event in events {
            self.query.after = Some(event.id.clone());
            if visible(&self.state, &self.identity, &event) {
                out.extend(serde_json::to_vec(&self.series.render(&event)).unwrap_or_default());
                out.push(b'\n');
            }
        }
        Ok(out)
    }

    fn bookmark(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "after": self.query.after}))
            .unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// What a controller tells about an object: `POST /v1/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Posted {
    #[serde(rename = "type")]
    event_type: EventType,
    reason: String,
    message: String,
    /// Who tells it (a controller's name).
    component: String,
    involved_object: Involved,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Involved {
    kind: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    workspace: String,
    name: String,
}

/// `POST /v1/events`: records an event about an object, told by a controller; it needs the
/// `Report` verb on the object's kind. Identical events fold into one with a count.
pub(super) async fn post(
    identity: Identity,
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let text = super::read_text(body, state.options.max_body_bytes).await?;
    let posted: Posted = serde_json::from_str(&text)
        .map_err(|e| ApiError::invalid("event", format!("not an event: {e}")))?;
    let involved = &posted.involved_object;
    let kind = Kind::parse(&involved.kind).ok_or_else(|| {
        ApiError::invalid(
            "involvedObject.kind",
            format!("no kind {:?}; see GET /v1/kinds", involved.kind),
        )
    })?;
    for (field, text) in [
        ("reason", &posted.reason),
        ("component", &posted.component),
        ("involvedObject.name", &involved.name),
    ] {
        if text.trim().is_empty() {
            return Err(ApiError::invalid(field, "must not be empty"));
        }
    }
    state.service.authorize(
        &identity,
        Verb::Report,
        kind,
        &involved.zone,
        &involved.workspace,
    )?;
    let key = ObjectKey::new(kind, &involved.zone, &involved.workspace, &involved.name);
    let event = Event::new(
        &key,
        posted.event_type,
        &posted.reason,
        posted.message,
        &posted.component,
    );
    state.service.record(event).await;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"recorded": true}),
    ))
}
