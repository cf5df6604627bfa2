"""What the blocking and the asynchronous clients share: settings, kinds, paths, bodies."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from .config import Settings, read_ca
from .errors import ApiError, ConfigError, StreamError
from .models import KindInfo, Resource, WatchEvent

#: Query parameters the SDK sends, per operation: ``test_models_match_openapi`` checks each
#: against the parameters ``/openapi.json`` states for it.
LIST_PARAMS = (
    "limit",
    "continue",
    "watch",
    "resourceVersion",
    "node",
    "labelSelector",
    "timeoutSeconds",
)
OBJECT_PARAMS = ("watch", "resourceVersion", "timeoutSeconds")
DELETE_PARAMS = ("version", "cascade")
APPLY_PARAMS = ("zone", "workspace", "dryRun")
LOG_PARAMS = ("follow", "tail", "previous")
EXEC_PARAMS = ("tty", "command")
UPLOAD_PARAMS = ("offset", "size", "mtime")
DOWNLOAD_PARAMS = ("stat", "upload", "offset", "recursive")

#: The most objects one page of a list holds.
PAGE = 1000
#: The longest a stream the API keeps busy stays silent: a watch gets a bookmark every 30 s.
IDLE = 90.0

KindRef = str | KindInfo


def settings(
    url: str | None,
    token: str | None,
    ca: str | os.PathLike[str] | None,
    profile: str | None,
    zone: str | None,
    workspace: str | None,
) -> Settings:
    """Explicit settings, or the CLI profile's when no URL is given."""
    if url is None and token is None and ca is None:
        base = Settings.from_profile(profile)
    elif url is None or token is None or ca is None:
        raise ConfigError("give url, token and ca together, or none of them to use the CLI profile")
    else:
        base = Settings(url=url, token=token, ca=read_ca(ca))
    return Settings(
        url=base.url.rstrip("/"),
        token=base.token,
        ca=base.ca,
        zone=zone or base.zone,
        workspace=workspace or base.workspace,
    )


def segment(text: str) -> str:
    """``text`` as one percent-encoded path segment."""
    return quote(text, safe="")


def file_path(path: str) -> str:
    """A path inside a volume, each segment percent-encoded; ``..`` is refused here, since
    URLs fold it away before they leave."""
    parts = [p for p in path.split("/") if p]
    if ".." in parts:
        raise ValueError(f"{path!r} leaves the volume; name a path inside it")
    return "/".join(segment(p) for p in parts)


class Kinds:
    """The kinds the API serves, by name, plural and alias (any case)."""

    def __init__(self, items: Iterable[Mapping[str, Any]]) -> None:
        self.by_name: dict[str, KindInfo] = {}
        for item in items:
            kind = KindInfo.from_dict(dict(item))
            for key in [kind.name, kind.plural, *kind.aliases]:
                self.by_name[key.lower()] = kind

    def find(self, name: str) -> KindInfo | None:
        return self.by_name.get(name.lower())

    def all(self) -> list[KindInfo]:
        unique = {k.name: k for k in self.by_name.values()}
        return sorted(unique.values(), key=lambda k: k.name)


class Place:
    """Defaults of a client: the zone and workspace of calls that name none."""

    def __init__(self, zone: str | None, workspace: str | None) -> None:
        self.zone = zone
        self.workspace = workspace

    def collection(
        self, kind: KindInfo, zone: str | None, workspace: str | None, all_workspaces: bool = False
    ) -> str:
        zone = zone or self.zone or "default"
        ws = None if all_workspaces else (workspace or self.workspace or "default")
        plural = kind.plural
        if kind.scope == "cluster":
            return f"/v1/{plural}"
        if kind.scope == "workspaced":
            return f"/v1/workspaces/{segment(ws)}/{plural}" if ws else f"/v1/{plural}"
        if kind.scope == "zoned" or ws is None:
            return f"/v1/zones/{segment(zone)}/{plural}"
        return f"/v1/zones/{segment(zone)}/workspaces/{segment(ws)}/{plural}"

    def object(self, kind: KindInfo, name: str, zone: str | None, workspace: str | None) -> str:
        return f"{self.collection(kind, zone, workspace)}/{segment(name)}"


def manifest(source: Any) -> tuple[str, str]:
    """The body and content type of an apply of ``source``: YAML or JSON text, a file or a
    folder of them (``pathlib.Path``), one object (a mapping or a :class:`Resource`), or a
    list of objects."""
    if isinstance(source, Resource):
        return json.dumps(source.to_dict()), "application/json"
    if isinstance(source, Mapping):
        return json.dumps(source), "application/json"
    if isinstance(source, os.PathLike):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            if not files:
                raise ValueError(f"{path} holds no .yaml, .yml or .json files")
            return "\n---\n".join(p.read_text() for p in files), "application/yaml"
        return path.read_text(), "application/yaml"
    if isinstance(source, str):
        return source, "application/yaml"
    if isinstance(source, Iterable):
        documents = [s.to_dict() if isinstance(s, Resource) else dict(s) for s in source]
        return yaml.safe_dump_all(documents, sort_keys=False), "application/yaml"
    raise TypeError(
        f"cannot apply a {type(source).__name__}: give YAML text, a Path, a dict or a list of dicts"
    )


def parse_event(line: bytes | str) -> WatchEvent:
    """The event one NDJSON watch line holds; an ERROR line is the API's error."""
    try:
        data = json.loads(line)
    except ValueError as e:
        raise StreamError(f"the API server sent a watch line that is not JSON: {e}") from e
    kind = data.get("type")
    if kind == "ERROR":
        raise ApiError.from_body(int(data.get("status") or 500), data)
    if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise StreamError(f"a watch event of unknown type {kind!r}")
    obj = data.get("object")
    return WatchEvent(
        type=kind,
        object=Resource.from_dict(obj) if isinstance(obj, dict) else None,
        resource_version=str(data.get("resourceVersion") or ""),
    )


def retryable(error: ApiError) -> bool:
    """Whether a watch that ended with ``error`` resumes on its own: the server shut down or
    its store was briefly unavailable. A 410 (the version is older than the feed keeps) or a
    lost right is the caller's to handle."""
    return error.status in (502, 503, 504)
