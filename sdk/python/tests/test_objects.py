"""Apply, get, list, delete for built-in kinds and kinds defined at run time; errors that
name the field; the CLI profile and explicit settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, Cluster

from dora_sdk import (
    ApiError,
    Client,
    ConfigError,
    Invalid,
    Metadata,
    NotFound,
    Resource,
    ResourceList,
)

WORKSPACE = """\
apiVersion: v1
kind: Workspace
metadata: {name: sdk-text}
"""


def test_apply_text_dicts_and_files_then_get_list_delete(client: Client) -> None:
    results = client.apply(WORKSPACE)
    assert len(results) == 1
    assert client.get("workspace", "sdk-text").metadata.name == "sdk-text"

    client.apply({"apiVersion": "v1", "kind": "Workspace", "metadata": {"name": "sdk-dict"}})
    client.apply(
        [
            {"apiVersion": "v1", "kind": "Workspace", "metadata": {"name": "sdk-list-1"}},
            {"apiVersion": "v1", "kind": "Workspace", "metadata": {"name": "sdk-list-2"}},
        ]
    )
    client.apply(Resource("v1", "Workspace", Metadata(name="sdk-model", labels={"by": "sdk"})))
    assert client.get("workspace", "sdk-model").metadata.labels == {"by": "sdk"}
    names = {w.name for w in client.list("ws")}
    assert {"sdk-text", "sdk-dict", "sdk-list-1", "sdk-list-2", "sdk-model"} <= names
    assert [w.name for w in client.list("ws", label_selector="by=sdk")] == ["sdk-model"]

    for name in ("sdk-text", "sdk-dict", "sdk-list-1", "sdk-list-2", "sdk-model"):
        assert client.delete("workspace", name).name == name
    with pytest.raises(NotFound) as missing:
        client.get("workspace", "sdk-text")
    assert "sdk-text" in str(missing.value)


def test_kinds_defined_at_run_time(client: Client) -> None:
    assert client.apply(REPO / "examples" / "definition.yaml")
    assert any(k.name == "Notebook" and not k.built_in for k in client.kinds())
    notebook = client.get("nb", "lab")
    assert notebook.kind == "Notebook"
    assert notebook.spec["image"] == "jupyter/base-notebook"
    assert [n.name for n in client.list("notebooks")] == ["lab"]
    client.delete("notebook", "lab")
    assert client.list("Notebook") == []
    client.delete("definition", "notebooks")


def test_errors_carry_the_field_and_message(client: Client) -> None:
    manifest = """\
apiVersion: v1
kind: Workspace
metadata: {name: sdk-fine}
---
apiVersion: v1
kind: Workload
metadata: {name: sdk-bad}
spec:
  replica: {count: -1}
  driver: Process
  config: {cmd: ["true"]}
"""
    with pytest.raises(Invalid) as refused:
        client.apply(manifest)
    error = refused.value
    assert error.status == 422
    assert error.reason == "Invalid"
    assert error.document == 1
    assert error.field is not None and error.field.startswith("spec.replica")
    assert error.message
    assert str(error).startswith("document 2: ")
    # The valid document was applied all the same, and the results say so.
    assert len(error.results) == 2
    assert client.get("workspace", "sdk-fine")
    client.delete("workspace", "sdk-fine")

    with pytest.raises(ApiError) as unknown:
        client.get("workload", "x", zone="no-such-zone")
    assert unknown.value.status in (400, 404)


def test_lists_render_as_tables(client: Client) -> None:
    client.apply(WORKSPACE)
    listed = client.list("workspace")
    assert isinstance(listed, ResourceList) and listed.resource_version
    table = listed._repr_html_()
    assert table.startswith("<table>") and "<td>sdk-text</td>" in table
    client.delete("workspace", "sdk-text")


def test_explicit_settings_and_the_profile(cluster: Cluster, tmp_path: Path) -> None:
    profile = cluster.profile()
    ca = tmp_path / "ca.pem"
    ca.write_text(profile["ca"])
    with Client(profile["apiServer"], profile["token"], ca) as explicit:
        assert explicit.whoami()["user"] == Client().whoami()["user"]
    with pytest.raises(ConfigError):
        Client(profile["apiServer"], profile["token"])
    with pytest.raises(ApiError) as refused:
        Client(profile["apiServer"], "not-a-token", profile["ca"]).whoami()
    assert refused.value.status == 401
