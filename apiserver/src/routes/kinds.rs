//! `GET /v1/kinds`: every kind the API serves now, built-in and defined, with what a client
//! needs to address and show it. Any authenticated caller may read it: the CLI learns defined
//! kinds (for parsing, tables, completion) from it.

use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::{Format, Kind, registry};
use serde_json::{Value, json};

use super::json_response;
use super::params::{NoParams, Params};
use crate::{ApiError, Identity};

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Text | Format::Of(_) => "text",
        Format::Count => "count",
        Format::Counter => "counter",
        Format::Command => "command",
        Format::Keys => "keys",
        Format::Bytes => "bytes",
        Format::Decimal => "decimal",
        Format::Age => "age",
        Format::Until => "until",
    }
}

fn describe(kind: Kind) -> Value {
    let columns: Vec<Value> = kind
        .columns()
        .iter()
        .map(|c| json!({"name": c.name, "pointers": c.pointers, "format": format_name(c.format), "wide": c.wide}))
        .collect();
    let mut item = json!({
        "name": kind.name(),
        "plural": kind.plural(),
        "aliases": kind.aliases(),
        "scope": kind.scope(),
        "builtIn": !kind.is_defined(),
        "view": kind.is_view(),
        "columns": columns,
    });
    if let Some(definition) = registry::definition(kind) {
        item["definition"] = json!(definition);
    }
    item
}

pub(super) async fn kinds(
    _: Identity,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = Kind::known().into_iter().map(describe).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"apiVersion": dora_crds::API_VERSION, "kind": "KindList", "items": items}),
    ))
}
