//! The OpenAPI 3.1 document. Kind schemas come from the typed specs (schemars emits JSON
//! Schema 2020-12, which OpenAPI 3.1 embeds as is) and, for defined kinds, from their
//! definitions; the document is made again when the defined kinds change.

use std::sync::{Arc, Mutex};

use dora_crds::spec::DefinitionSpec;
use dora_crds::{Kind, kind_schema, registry};
use serde_json::{Map, Value, json};

/// Moves a schema's `$defs` into `defs` and points its references at `components/schemas`.
fn hoist(schema: &mut Value, defs: &mut Map<String, Value>) {
    match schema {
        Value::Object(map) => {
            map.remove("$schema");
            if let Some(Value::Object(inner)) = map.remove("$defs") {
                for (name, mut def) in inner {
                    hoist(&mut def, defs);
                    defs.insert(name, def);
                }
            }
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(name) = reference.strip_prefix("#/$defs/")
            {
                *reference = format!("#/components/schemas/{name}");
            }
            map.values_mut().for_each(|v| hoist(v, defs));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| hoist(v, defs)),
        _ => {}
    }
}

fn error_responses() -> Value {
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut responses = Map::new();
    for (code, text) in [
        ("400", "Malformed request"),
        ("401", "Missing, invalid or expired token"),
        (
            "403",
            "Not allowed, or the client address is banned (reason Banned, with Retry-After)",
        ),
        ("404", "Not found"),
        ("409", "Stale version"),
        ("413", "Body too large"),
        ("422", "Invalid document"),
        (
            "429",
            "Past a rate limit; retry after the seconds in Retry-After",
        ),
    ] {
        let mut response = error.clone();
        response["description"] = json!(text);
        responses.insert(code.into(), response);
    }
    Value::Object(responses)
}

fn with_ok(description: &str, schema: Value) -> Value {
    let mut responses = error_responses();
    responses["200"] =
        json!({"description": description, "content": {"application/json": {"schema": schema}}});
    responses
}

fn build() -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let param = |name: &str| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}});
    for kind in Kind::known() {
        let resource_ref = json!({"$ref": format!("#/components/schemas/{kind}")});
        if let Some(mut spec) = kind_schema(kind) {
            hoist(&mut spec, &mut schemas);
            schemas.insert(format!("{kind}Spec"), spec);
        }
        let mut resource = json!({
            "type": "object",
            "required": ["apiVersion", "kind", "metadata"],
            "properties": {
                "apiVersion": {"const": "v1"},
                "kind": {"const": kind.name()},
                "metadata": {"$ref": "#/components/schemas/Metadata"},
                "status": {"type": "object"},
            },
        });
        if !kind.is_view() {
            resource["properties"]["spec"] =
                json!({"$ref": format!("#/components/schemas/{kind}Spec")});
        }
        schemas.insert(kind.name().into(), resource);
        if kind == Kind::Token {
            // Token records have routes of their own (`/v1/tokens`, below).
            continue;
        }
        let scope = kind.scope();
        let collection =
            kind.collection_path("{zone}", scope.has_workspace().then_some("{workspace}"));
        let mut parameters = Vec::new();
        if scope.has_zone() {
            parameters.push(param("zone"));
        }
        if scope.has_workspace() {
            parameters.push(param("workspace"));
        }
        let list_params = json!([
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 5000}},
            {"name": "continue", "in": "query", "schema": {"type": "string"}},
            {"name": "watch", "in": "query", "description": "Stream changes as NDJSON", "schema": {"type": "boolean"}},
            {"name": "resourceVersion", "in": "query", "description": "Watch from this change-feed position; one ahead of the newest change is refused (400)", "schema": {"type": "string"}},
            {"name": "labelSelector", "in": "query", "description": "Only objects whose labels match, in kubectl's syntax: key=value, key!=value, key in (a,b), key notin (a,b), key, !key, joined by commas", "schema": {"type": "string"}},
        ]);
        paths.insert(collection.clone(), json!({
            "parameters": parameters,
            "get": {
                "summary": format!("List or watch {}", kind.plural()),
                "tags": [kind.name()],
                "parameters": list_params,
                "responses": with_ok("A page of items, or an NDJSON stream with watch=true", json!({"type": "object", "properties": {"items": {"type": "array", "items": resource_ref}}})),
            },
        }));
        let mut item_params = parameters.clone();
        item_params.push(param("name"));
        let mut item = json!({
            "parameters": item_params,
            "get": {"summary": format!("Get one {kind}"), "tags": [kind.name()], "responses": with_ok(kind.name(), resource_ref.clone())},
        });
        if !kind.is_view() {
            item["put"] = json!({
                "summary": format!("Apply one {kind}"),
                "tags": [kind.name()],
                "requestBody": {"content": {"application/yaml": {"schema": resource_ref}, "application/json": {"schema": resource_ref}}},
                "responses": with_ok("Applied", json!({"type": "object"})),
            });
            let mut delete_params =
                vec![json!({"name": "version", "in": "query", "schema": {"type": "integer"}})];
            if kind == Kind::Definition {
                delete_params.push(json!({"name": "cascade", "in": "query", "description": "Also delete the objects of the kind; without it, a definition whose kind has objects is not deleted (409)", "schema": {"type": "boolean"}}));
            }
            item["delete"] = json!({
                "summary": format!("Delete one {kind}"),
                "tags": [kind.name()],
                "parameters": delete_params,
                "responses": with_ok("The deleted resource", resource_ref.clone()),
            });
            paths.insert(format!("{collection}/{{name}}/versions"), json!({
                "parameters": item_params,
                "get": {"summary": format!("Spec history of one {kind}"), "tags": [kind.name()], "responses": with_ok("Versions", json!({"type": "object"}))},
            }));
            if registry::definition(kind).is_some_and(|definition| definition.status) {
                paths.insert(format!("{collection}/{{name}}/status"), json!({
                    "parameters": item_params,
                    "put": {"summary": format!("Replace the status of one {kind} (needs Report)"), "tags": [kind.name()], "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}, "responses": with_ok("The object", resource_ref.clone())},
                    "patch": {"summary": format!("Merge a JSON merge patch (RFC 7386) into the status of one {kind} (needs Report)"), "tags": [kind.name()], "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}}, "responses": with_ok("The object", resource_ref.clone())},
                }));
            }
        }
        paths.insert(format!("{collection}/{{name}}"), item);
    }
    schemas.insert("Metadata".into(), json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", "maxLength": 253},
            "zone": {"type": "string"},
            "workspace": {"type": "string", "description": "`group` is accepted as an alias"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Left out of an apply, the stored ones are kept"},
            "ownerReferences": {"type": "array", "description": "The object is deleted once none of its owners exists; left out of an apply, the stored ones are kept", "items": {
                "type": "object",
                "required": ["kind", "name", "uid"],
                "properties": {
                    "apiVersion": {"type": "string", "default": "v1"},
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "uid": {"type": "string"},
                    "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
            }},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "A delete only sets deletionTimestamp until every finalizer is removed; left out of an apply, the stored ones are kept"},
            "deletionTimestamp": {"type": "string", "format": "date-time", "readOnly": true},
            "version": {"type": "integer", "description": "When given on apply, the update only happens at this version"},
            "uid": {"type": "string", "readOnly": true},
            "generation": {"type": "integer", "readOnly": true},
            "specHash": {"type": "string", "readOnly": true},
            "owner": {"type": "string", "readOnly": true},
            "created": {"type": "string", "format": "date-time", "readOnly": true},
            "updated": {"type": "string", "format": "date-time", "readOnly": true},
        },
    }));
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "error": {"type": "object", "properties": {
                    "reason": {"type": "string"}, "message": {"type": "string"},
                    "document": {"type": "integer"}, "field": {"type": "string"},
                }},
            },
        }),
    );
    paths.insert("/v1/apply".into(), json!({"post": {
        "summary": "Apply a multi-document YAML or JSON manifest",
        "parameters": [
            {"name": "zone", "in": "query", "schema": {"type": "string"}},
            {"name": "workspace", "in": "query", "schema": {"type": "string"}},
        ],
        "requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}}}},
        "responses": with_ok("One result per document: created, configured or unchanged", json!({"type": "object"})),
    }}));
    let event_params: Vec<Value> = [
        "zone",
        "kind",
        "workspace",
        "name",
        "limit",
        "after",
        "watch",
    ]
    .iter()
    .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
    .collect();
    paths.insert(
        "/v1/events".into(),
        json!({"get": {
            "summary": "Events of a zone; watch=true follows them as NDJSON",
            "parameters": event_params,
            "responses": with_ok("Events, oldest first", json!({"type": "object"})),
        }}),
    );
    let token_params: Vec<Value> = ["user", "limit", "continue"]
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
        .collect();
    paths.insert(
        "/v1/tokens/{id}".into(),
        json!({
            "parameters": [param("id")],
            "get": {
                "summary": "The record of a token you may manage: user, purpose, expiry, last use, revocation",
                "responses": with_ok("The token's record", json!({"type": "object"})),
            },
            "delete": {
                "summary": "Revoke a token before it expires: every API server refuses it within a second",
                "responses": with_ok("The token's record, revoked", json!({"type": "object"})),
            },
        }),
    );
    paths.insert("/v1/tokens".into(), json!({"get": {
        "summary": "Records of the tokens you may manage (yours; everyone's for an administrator), newest first",
        "parameters": token_params,
        "responses": with_ok("Token records", json!({"type": "object"})),
    }, "post": {
        "summary": "Create a token (for yourself, or as an administrator for any user)",
        "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
            "user": {"type": "string"}, "expiresIn": {"type": "string"}, "zone": {"type": "string"}, "workspace": {"type": "string"},
            "node": {"type": "string", "description": "mint a node credential for this node of the zone"},
            "join": {"type": "boolean", "description": "mint a join token for the zone"},
        }}}}},
        "responses": with_ok("The token", json!({"type": "object"})),
    }}));
    for (path, actions, verb) in [
        (
            "/v1/zones/{zone}/workspaces/{workspace}/workloads/{name}/{action}",
            ["pause", "resume"],
            "Pause or Resume",
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/{action}",
            ["drain", "uncordon"],
            "Apply on Node",
        ),
    ] {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                let mut schema = json!({"type": "string"});
                if name == "action" {
                    schema["enum"] = json!(actions);
                }
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        paths.insert(path.into(), json!({"post": {
            "summary": format!("Ask the scheduler to {} (needs {verb}); it is carried out asynchronously", actions.join(" or ")),
            "parameters": parameters,
            "responses": {"202": {"description": "Accepted: the action is recorded", "content": {"application/json": {"schema": {"type": "object"}}}}},
        }}));
    }
    let base = "/v1/zones/{zone}/workspaces/{workspace}";
    for (path, method, summary, verb) in [
        (
            format!("{base}/containers/{{name}}/logs"),
            "get",
            "The container's output; follow=true keeps it coming, tail=N starts with the last N lines",
            "Log",
        ),
        (
            format!("{base}/containers/{{name}}/top"),
            "get",
            "CPU and memory use of the container",
            "GetOne",
        ),
        (
            format!("{base}/containers/{{name}}/exec"),
            "post",
            "Run {\"command\": [...]} in the container to its end; a WebSocket GET (tty, command) opens a session instead",
            "Shell",
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/top".to_string(),
            "get",
            "CPU and memory use of every container on the node",
            "GetOne on Node",
        ),
        (
            format!("{base}/volumes/{{name}}/files/{{path}}"),
            "get",
            "A folder's entries or a file's contents (stat=true: details; upload=true: bytes of an interrupted upload)",
            "Ls, Download",
        ),
        (
            format!("{base}/volumes/{{name}}/files/{{path}}"),
            "put",
            "Upload a file: size=N, offset=M resumes",
            "Upload",
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/report".to_string(),
            "put",
            "A node agent registers and heartbeats its node",
            "a node credential",
        ),
        (
            format!("{base}/containers/{{name}}/report"),
            "put",
            "A node agent reports a container's state for its binding (409 when the binding moved on)",
            "a node credential",
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/certificate".to_string(),
            "post",
            "A node's serving certificate from the cluster CA",
            "a node credential",
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/credential".to_string(),
            "post",
            "A new node claims its name and gets its credential",
            "a join token, or Token on Node",
        ),
        (
            format!("{base}/containers/{{name}}/mounts"),
            "get",
            "The container's volumes resolved to where they live",
            "a node credential",
        ),
    ] {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[method] = json!({
            "summary": format!("{summary} (needs {verb})"),
            "parameters": parameters,
            "responses": with_ok("See the summary", json!({})),
        });
    }
    paths.insert("/v1/zones/{zone}/queue".into(), json!({"get": {
        "summary": "The zone's waiting workloads in the scheduler's order, with position, priority, reason and estimated start",
        "parameters": [param("zone")],
        "responses": with_ok("Queue", json!({"type": "object"})),
    }}));
    paths.insert("/v1/bans".into(), json!({"get": {
        "summary": "The client addresses this API server bans after failed authentications (needs Get on User in all zones and workspaces)",
        "responses": with_ok("Bans, soonest to end first", json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {
            "address": {"type": "string"}, "since": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"}, "remaining": {"type": "integer", "description": "seconds"},
        }}}}})),
    }}));
    paths.insert("/v1/bans/{address}".into(), json!({"delete": {
        "summary": "Lift the ban of an address on this API server (needs Delete on User in all zones and workspaces)",
        "parameters": [param("address")],
        "responses": with_ok("Lifted", json!({"type": "object"})),
    }}));
    paths.insert("/v1/whoami".into(), json!({"get": {"summary": "The caller's identity", "responses": with_ok("Identity", json!({"type": "object"}))}}));
    for (path, summary) in [
        ("/healthz", "Liveness"),
        ("/readyz", "Readiness: the store answers"),
        ("/metrics", "Prometheus metrics"),
    ] {
        paths.insert(path.into(), json!({"get": {"summary": summary, "security": [], "responses": {"200": {"description": "OK"}}}}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Dora API", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWE"}},
        },
    })
}

/// The document, made again only when the defined kinds have changed since it was made.
pub fn document() -> Arc<Value> {
    type Made = Option<(Vec<DefinitionSpec>, Arc<Value>)>;
    static DOCUMENT: Mutex<Made> = Mutex::new(None);
    let defined: Vec<DefinitionSpec> = registry::defined()
        .into_iter()
        .filter_map(registry::definition)
        .collect();
    let mut made = DOCUMENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((specs, document)) = made.as_ref()
        && *specs == defined
    {
        return document.clone();
    }
    let document = Arc::new(build());
    *made = Some((defined, document.clone()));
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for reference in found {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("foreign ref {reference}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {reference}"
            );
        }
        assert!(
            doc["paths"]
                .get("/v1/zones/{zone}/workspaces/{workspace}/workloads/{name}")
                .is_some()
        );
    }

    #[test]
    fn a_defined_kind_appears_with_its_schema_once_defined() {
        let spec: DefinitionSpec = serde_json::from_value(json!({
            "names": {"kind": "Openapithing", "plural": "openapithings"},
            "scope": "workspaced",
            "schema": {"type": "object", "properties": {"size": {"type": "integer"}}},
            "status": true,
        }))
        .unwrap();
        let path = "/v1/workspaces/{workspace}/openapithings/{name}";
        assert!(document()["paths"].get(path).is_none());
        registry::define(&spec).unwrap();
        let doc = document();
        assert!(doc["paths"].get(path).is_some(), "served at {path}");
        let status = &doc["paths"][format!("{path}/status")];
        assert!(
            status["put"].is_object() && status["patch"].is_object(),
            "{status}"
        );
        assert_eq!(
            doc["components"]["schemas"]["OpenapithingSpec"]["properties"]["size"]["type"],
            "integer"
        );
    }
}
