//! The OpenAPI 3.1 document. Kind schemas come from the typed specs (schemars emits JSON
//! Schema 2020-12, which OpenAPI 3.1 embeds as is) and, for defined kinds, from their
//! definitions; the document is made again when the defined kinds change.

use std::sync::{Arc, Mutex};

use dora_crds::spec::DefinitionSpec;
use dora_crds::{Kind, kind_schema, registry};
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

use crate::routes::queries;

/// The query parameters of `T`, a handler's parameters: the document states what the server
/// reads, from the same struct.
fn query<T: JsonSchema>() -> Vec<Value> {
    let schema = schemars::schema_for!(T).to_value();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"));
            // `Option<T>` is `[T, "null"]`: a parameter left out is the null.
            if let Some(types) = property["type"].as_array() {
                let types: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                if let [only] = types[..] {
                    property["type"] = only.clone();
                }
            }
            let mut parameter = json!({"name": name, "in": "query", "schema": property});
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

/// `query::<T>()` without the parameters named in `without`.
fn query_without<T: JsonSchema>(without: &[&str]) -> Vec<Value> {
    query::<T>()
        .into_iter()
        .filter(|p| !without.iter().any(|name| p["name"] == *name))
        .collect()
}

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
        (
            "405",
            "Method not allowed; the Allow header lists those that are",
        ),
        ("409", "Stale version, or a state that forbids it"),
        ("413", "Body too large"),
        ("422", "Invalid document"),
        (
            "429",
            "Past a rate limit; retry after the seconds in Retry-After",
        ),
        (
            "503",
            "Unavailable: the store, or the node a request goes to, does not answer",
        ),
    ] {
        let mut response = error.clone();
        response["description"] = json!(text);
        responses.insert(code.into(), response);
    }
    Value::Object(responses)
}

fn with_ok(description: &str, schema: Value) -> Value {
    answers(&[("200", description)], schema)
}

/// The error responses and the successes `codes`, each with `schema`.
fn answers(codes: &[(&str, &str)], schema: Value) -> Value {
    let mut responses = error_responses();
    for (code, description) in codes {
        responses[*code] = json!({"description": description, "content": {"application/json": {"schema": schema.clone()}}});
    }
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
        let list_params = if kind.is_view() {
            // A view comes whole, in one answer.
            query::<queries::Nothing>()
        } else if kind == Kind::Container {
            query::<queries::List>()
        } else {
            query_without::<queries::List>(&["node"])
        };
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
        let object_params = if kind.is_view() {
            query::<queries::Nothing>()
        } else {
            query::<queries::Object>()
        };
        let mut item = json!({
            "parameters": item_params,
            "get": {"summary": format!("Get one {kind}"), "tags": [kind.name()], "parameters": object_params, "responses": with_ok(kind.name(), resource_ref.clone())},
        });
        if !kind.is_view() {
            item["put"] = json!({
                "summary": format!("Apply one {kind}"),
                "tags": [kind.name()],
                "requestBody": {"content": {"application/yaml": {"schema": resource_ref}, "application/json": {"schema": resource_ref}}},
                "responses": answers(&[("200", "Configured or unchanged"), ("201", "Created")], json!({"type": "object"})),
            });
            let delete_params = if kind == Kind::Definition {
                query::<queries::Delete>()
            } else {
                query_without::<queries::Delete>(&["cascade"])
            };
            item["delete"] = json!({
                "summary": format!("Delete one {kind}"),
                "tags": [kind.name()],
                "parameters": delete_params,
                "responses": answers(&[("200", "Deleted"), ("202", "Marked for deletion: waits on its finalizers")], resource_ref.clone()),
            });
            paths.insert(format!("{collection}/{{name}}/versions"), json!({
                "parameters": item_params,
                "get": {"summary": format!("Spec history of one {kind}"), "tags": [kind.name()], "responses": with_ok("Versions", json!({"type": "object"}))},
            }));
            paths.insert(format!("{collection}/{{name}}/rollback"), json!({
                "parameters": item_params,
                "post": {
                    "summary": format!("Apply an earlier spec of one {kind} again, as a new generation (needs Version and Apply)"),
                    "tags": [kind.name()],
                    "parameters": query::<queries::Rollback>(),
                    "responses": with_ok("The outcome and the object, as a PUT answers", json!({"type": "object"})),
                },
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
            "name": {"type": "string", "minLength": 1, "maxLength": 253, "description": "Lowercase letters, digits, '.' and '-', starting and ending with a letter or digit; a Resourcecredit's is the product it prices as nodes report it (letters, digits, spaces and ._-()@,+:)"},
            "zone": {"type": "string"},
            "workspace": {"type": "string", "description": "`group` is accepted as an alias"},
            "labels": {"type": "object", "maxProperties": dora_crds::limits::MAX_LABELS, "additionalProperties": {"type": "string", "maxLength": dora_crds::limits::MAX_LABEL_VALUE}},
            "annotations": {"type": "object", "maxProperties": dora_crds::limits::MAX_ANNOTATIONS, "additionalProperties": {"type": "string"}, "description": "Left out of an apply, the stored ones are kept; keys and values hold at most 256 KiB together"},
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
        "summary": "Apply a multi-document YAML or JSON manifest, or with dryRun=true check it and answer what it would write",
        "parameters": query::<queries::Apply>(),
        "requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}}}},
        "responses": with_ok("One result per document: created, configured or unchanged", json!({"type": "object"})),
    }}));
    paths.insert(
        "/v1/events".into(),
        json!({"get": {
            "summary": "Events of a zone; watch=true follows them as NDJSON",
            "parameters": query::<queries::Events>(),
            "responses": with_ok("Events, oldest first", json!({"type": "object"})),
        }, "post": {
            "summary": "Record an event about an object (needs Report on its kind)",
            "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": answers(&[("201", "Recorded")], json!({"type": "object"})),
        }}),
    );
    paths.insert(
        "/v1/kinds".into(),
        json!({"get": {
            "summary": "Every kind served: names, aliases, scope, columns",
            "responses": with_ok("Kinds", json!({"type": "object"})),
        }}),
    );
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
        "parameters": query::<queries::Tokens>(),
        "responses": with_ok("Token records", json!({"type": "object"})),
    }, "post": {
        "summary": "Create a token (for yourself, or as an administrator for any user)",
        "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
            "user": {"type": "string"}, "expiresIn": {"type": "string"}, "zone": {"type": "string"}, "workspace": {"type": "string"},
            "node": {"type": "string", "description": "mint a node credential for this node of the zone"},
            "join": {"type": "boolean", "description": "mint a join token for the zone"},
        }}}}},
        "responses": answers(&[("201", "The token")], json!({"type": "object"})),
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
            "responses": answers(&[("202", "Accepted: the action is recorded")], json!({"type": "object"})),
        }}));
    }
    let base = "/v1/zones/{zone}/workspaces/{workspace}";
    let ok = [("200", "See the summary")];
    let proxied = [
        ("200", "See the summary"),
        ("502", "The node answered with an error"),
    ];
    let nothing = query::<queries::Nothing>;
    for (path, method, summary, verb, parameters, codes) in [
        (
            format!("{base}/containers/{{name}}/logs"),
            "get",
            "The container's output; follow=true keeps it coming, tail=N starts with the last N lines",
            "Log",
            query::<queries::Logs>(),
            &proxied[..],
        ),
        (
            format!("{base}/containers/{{name}}/top"),
            "get",
            "CPU and memory use of the container",
            "GetOne",
            nothing(),
            &proxied[..],
        ),
        (
            format!("{base}/containers/{{name}}/exec"),
            "post",
            "Run {\"command\": [...]} in the container to its end",
            "Shell",
            nothing(),
            &proxied[..],
        ),
        (
            format!("{base}/containers/{{name}}/exec"),
            "get",
            "A WebSocket session in the container (101 Switching Protocols): a terminal with tty=true",
            "Shell",
            query::<queries::Terminal>()
                .into_iter()
                .chain([json!({"name": "Upgrade", "in": "header", "required": true, "schema": {"const": "websocket"}})])
                .collect(),
            &[
                ("101", "Switching to the WebSocket session"),
                ("502", "The node answered with an error"),
            ][..],
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/top".to_string(),
            "get",
            "CPU and memory use of every container on the node",
            "GetOne on Node",
            nothing(),
            &proxied[..],
        ),
        (
            format!("{base}/volumes/{{name}}/files/{{path}}"),
            "get",
            "A folder's entries or a file's contents (stat=true: details; upload=true: bytes of an interrupted upload; recursive=true: a folder's whole tree; offset=N: contents from byte N)",
            "Ls, Download",
            query::<queries::Download>(),
            &proxied[..],
        ),
        (
            format!("{base}/volumes/{{name}}/files/{{path}}"),
            "put",
            "Upload a file: size=N, offset=M resumes, mtime=MS sets its modification time",
            "Upload",
            query::<queries::Upload>(),
            &proxied[..],
        ),
        (
            format!("{base}/volumes/{{name}}/files/{{path}}"),
            "delete",
            "Remove a file, or a folder (recursive=true when it holds anything)",
            "Upload",
            query::<queries::Remove>(),
            &proxied[..],
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/report".to_string(),
            "put",
            "A node agent registers and heartbeats its node",
            "a node credential",
            nothing(),
            &ok[..],
        ),
        (
            format!("{base}/containers/{{name}}/report"),
            "put",
            "A node agent reports a container's state for its binding (409 when the binding moved on)",
            "a node credential",
            nothing(),
            &ok[..],
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/certificate".to_string(),
            "post",
            "A node's serving certificate from the cluster CA",
            "a node credential",
            nothing(),
            &[("201", "The certificate")][..],
        ),
        (
            "/v1/zones/{zone}/nodes/{name}/credential".to_string(),
            "post",
            "A new node claims its name and gets its credential",
            "a join token, or Token on Node",
            nothing(),
            &[("201", "The credential")][..],
        ),
        (
            format!("{base}/containers/{{name}}/mounts"),
            "get",
            "The container's volumes resolved to where they live",
            "a node credential",
            nothing(),
            &ok[..],
        ),
    ] {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .chain(parameters)
            .collect();
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[method] = json!({
            "summary": format!("{summary} (needs {verb})"),
            "parameters": parameters,
            "responses": answers(codes, json!({})),
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
    paths.insert("/v1/console/login".into(), json!({"post": {
        "summary": "Start a web console session with a token or a `dora console` login code: sets the Secure, HttpOnly, SameSite=Strict cookie dora_session; requests with it must come from the console's origin, and those that change something must carry the header X-Dora-Console",
        "security": [],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {"token": {"type": "string"}, "code": {"type": "string"}}}}}},
        "responses": with_ok("Identity", json!({"type": "object"})),
    }}));
    paths.insert("/v1/console/session".into(), json!({"get": {
        "summary": "Who the request's console session cookie logs in, the places (zone and workspace) whose workloads they may read and the zones whose credit accounts they may read (creditZones); {\"user\": null} without a session",
        "security": [],
        "responses": with_ok("Identity", json!({"type": "object"})),
    }}));
    let mut logged_out = error_responses();
    logged_out["204"] = json!({"description": "Logged out; the cookie is cleared"});
    paths.insert(
        "/v1/console/logout".into(),
        json!({"post": {
            "summary": "End the web console session of the request's cookie (its token is revoked)",
            "responses": logged_out,
        }}),
    );
    paths.insert("/v1/console/codes".into(), json!({"post": {
        "summary": "A code that logs the caller in to the web console once within 60 s, at /ui/#login=CODE",
        "responses": with_ok("Code", json!({"type": "object", "properties": {"code": {"type": "string"}, "expiresIn": {"type": "integer"}, "path": {"type": "string"}}})),
    }}));
    paths.insert("/v1/whoami".into(), json!({"get": {"summary": "The caller's identity", "responses": with_ok("Identity", json!({"type": "object"}))}}));
    for (path, summary) in [
        ("/healthz", "Liveness"),
        ("/readyz", "Readiness: the store answers"),
    ] {
        paths.insert(path.into(), json!({"get": {"summary": summary, "security": [], "responses": with_ok("OK", json!({"type": "object"}))}}));
    }
    let mut metrics = error_responses();
    metrics["200"] = json!({"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}});
    paths.insert("/metrics".into(), json!({"get": {
        "summary": "Prometheus metrics (needs Describe on Zone in a binding whose zone and workspace are All)",
        "responses": metrics,
    }}));
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
