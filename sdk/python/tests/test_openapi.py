"""The SDK's models and the query parameters it sends follow ``/openapi.json``: a field or
parameter added, renamed or removed on either side fails here."""

from __future__ import annotations

import copy
from typing import Any

from conftest import REPO, Cluster

from dora_sdk import Client, KindInfo, Metadata, OwnerReference, Resource, _core
from dora_sdk.models import ERROR_FIELDS, wire_names

BASE = "/v1/zones/{zone}/workspaces/{workspace}"

#: (method, path in /openapi.json, the SDK's parameters of that operation)
OPERATIONS = [
    ("get", f"{BASE}/containers", _core.LIST_PARAMS),
    ("get", f"{BASE}/workloads/{{name}}", _core.OBJECT_PARAMS),
    ("delete", "/v1/definitions/{name}", _core.DELETE_PARAMS),
    ("post", "/v1/apply", _core.APPLY_PARAMS),
    ("get", f"{BASE}/containers/{{name}}/logs", _core.LOG_PARAMS),
    ("get", f"{BASE}/containers/{{name}}/exec", _core.EXEC_PARAMS),
    ("put", f"{BASE}/volumes/{{name}}/files/{{path}}", _core.UPLOAD_PARAMS),
    ("get", f"{BASE}/volumes/{{name}}/files/{{path}}", _core.DOWNLOAD_PARAMS),
]


def drift(doc: dict[str, Any]) -> list[str]:
    """Where the SDK and an OpenAPI document disagree, one line each."""
    problems: list[str] = []
    schemas = doc["components"]["schemas"]

    def compare(what: str, ours: set[str], theirs: set[str]) -> None:
        if ours != theirs:
            problems.append(
                f"{what}: only in the SDK {sorted(ours - theirs)}, only in the API {sorted(theirs - ours)}"
            )

    metadata = schemas["Metadata"]["properties"]
    compare("Metadata", wire_names(Metadata), set(metadata))
    compare(
        "OwnerReference",
        wire_names(OwnerReference),
        set(metadata["ownerReferences"]["items"]["properties"]),
    )
    envelope: set[str] = set()
    for name, schema in schemas.items():
        if schema.get("properties", {}).get("kind", {}).get("const") == name:
            envelope |= set(schema["properties"])
    compare("Resource", wire_names(Resource), envelope)
    compare("Error", set(ERROR_FIELDS), set(schemas["Error"]["properties"]["error"]["properties"]))
    for method, path, ours in OPERATIONS:
        operation = doc["paths"].get(path, {}).get(method)
        if operation is None:
            problems.append(f"{method.upper()} {path} is not in the API")
            continue
        theirs = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        compare(f"{method.upper()} {path} query", set(ours), theirs)
    return problems


def test_models_match_openapi(cluster: Cluster, client: Client) -> None:
    doc = client.request("GET", "/openapi.json").json()
    assert drift(doc) == []
    # The check can fail: a field the API adds, and a parameter it drops, are noticed.
    changed = copy.deepcopy(doc)
    changed["components"]["schemas"]["Metadata"]["properties"]["priority"] = {"type": "integer"}
    changed["paths"][f"{BASE}/containers/{{name}}/logs"]["get"]["parameters"].pop()
    found = drift(changed)
    assert len(found) == 2 and "priority" in found[0], found


def test_kind_descriptions_match_the_model(client: Client) -> None:
    # A defined kind, so that its description (with its definition) is among them.
    client.apply(REPO / "examples" / "definition.yaml")
    items = client.request("GET", "/v1/kinds").json()["items"]
    keys = set().union(*(item.keys() for item in items))
    assert keys == wire_names(KindInfo)
    assert {k.name for k in client.kinds()} >= {"Workload", "Container", "Volume", "Notebook"}
    client.delete("definition", "notebooks", cascade=True)


def test_every_listed_object_reads_as_a_model(client: Client) -> None:
    for kind in client.kinds():
        if kind.view or kind.name == "Token":
            continue
        for item in client.list(kind):
            raw = item.to_dict()
            assert set(raw) <= wire_names(Resource), (kind.name, set(raw))
            assert set(raw["metadata"]) <= wire_names(Metadata), (kind.name, raw["metadata"])
