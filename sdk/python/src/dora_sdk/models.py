"""The shapes the API sends and takes, as ``/openapi.json`` states them (the test
``test_models_match_openapi`` fails when the two part). Specs and statuses stay plain
dicts: each kind, defined ones included, has its own schema."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def wire_names(model: type[Any]) -> set[str]:
    """The JSON names of a model's fields."""
    names = {f.metadata.get("json", _camel(f.name)) for f in fields(model)}
    names.discard("-")
    return names


def _from(model: type[T], data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The constructor arguments of ``model`` from ``data``, and the keys it does not know."""
    known = {f.metadata.get("json", _camel(f.name)): f.name for f in fields(model)}  # type: ignore[arg-type]
    kwargs = {known[k]: v for k, v in data.items() if k in known}
    extra = {k: v for k, v in data.items() if k not in known}
    return kwargs, extra


def _to(model: Any) -> dict[str, Any]:
    """A model as JSON, under its wire names, without the fields left empty."""
    document: dict[str, Any] = {}
    for f in fields(model):
        value = getattr(model, f.name)
        if hasattr(value, "__dataclass_fields__"):
            value = _to(value)
        elif isinstance(value, list):
            value = [_to(v) if hasattr(v, "__dataclass_fields__") else v for v in value]
        if value is not None and value != {} and value != []:
            document[f.metadata.get("json", _camel(f.name))] = value
    return document


@dataclass
class OwnerReference:
    """An owner of an object: it is deleted once none of its owners exists."""

    kind: str
    name: str
    uid: str
    api_version: str = "v1"
    controller: bool | None = None
    block_owner_deletion: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OwnerReference:
        return cls(**_from(cls, data)[0])


@dataclass
class Metadata:
    """``metadata`` of every object. The server sets ``uid``, ``generation``, ``owner``,
    ``created``, ``updated``, ``spec_hash`` and ``deletion_timestamp``; ``version`` given on
    apply makes the update conditional."""

    name: str
    zone: str | None = None
    workspace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner_references: list[OwnerReference] = field(default_factory=list)
    finalizers: list[str] = field(default_factory=list)
    deletion_timestamp: str | None = None
    version: int | None = None
    uid: str | None = None
    generation: int | None = None
    spec_hash: str | None = None
    owner: str | None = None
    created: str | None = None
    updated: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metadata:
        kwargs, _ = _from(cls, data)
        kwargs["owner_references"] = [
            OwnerReference.from_dict(o) for o in kwargs.get("owner_references") or []
        ]
        kwargs["labels"] = kwargs.get("labels") or {}
        kwargs["annotations"] = kwargs.get("annotations") or {}
        kwargs["finalizers"] = kwargs.get("finalizers") or []
        return cls(**kwargs)


@dataclass
class Resource:
    """One object of any kind: ``spec`` and ``status`` as the API sends them; ``raw`` is
    the whole answer."""

    api_version: str
    kind: str
    metadata: Metadata
    spec: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"json": "-"})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resource:
        kwargs, _ = _from(cls, data)
        kwargs["metadata"] = Metadata.from_dict(data.get("metadata") or {})
        kwargs["spec"] = data.get("spec") or {}
        kwargs["status"] = data.get("status") or {}
        kwargs.setdefault("api_version", "v1")
        kwargs["raw"] = data
        return cls(**kwargs)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def phase(self) -> str | None:
        """``status.phase``: the word a person reads first (``Running``, ``Pending``...)."""
        phase = self.status.get("phase")
        return phase if isinstance(phase, str) else None

    def to_dict(self) -> dict[str, Any]:
        """The object as the API sent it or, for one made here, as the API takes it."""
        if self.raw:
            return self.raw
        document = _to(self)
        document.pop("-", None)
        return document


#: The fields of the body of an error answer's ``error`` object.
ERROR_FIELDS = frozenset({"reason", "message", "document", "field"})

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


@dataclass
class WatchEvent:
    """One line of a watch: what changed, the object (``None`` for a bookmark), and the
    ``resourceVersion`` a watch resumed after it starts from."""

    type: EventType
    object: Resource | None
    resource_version: str


@dataclass
class KindInfo:
    """A kind the API serves (``GET /v1/kinds``), built in or defined at run time."""

    name: str
    plural: str
    aliases: list[str]
    scope: Literal["cluster", "workspaced", "zoned", "zonedWorkspaced"]
    built_in: bool
    view: bool
    columns: list[dict[str, Any]] = field(default_factory=list)
    definition: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KindInfo:
        return cls(**_from(cls, data)[0])

    @property
    def has_zone(self) -> bool:
        return self.scope in ("zoned", "zonedWorkspaced")

    @property
    def has_workspace(self) -> bool:
        return self.scope in ("workspaced", "zonedWorkspaced")


@dataclass
class ExecResult:
    """How a command run in a container ended, and what it wrote (stdout and stderr)."""

    exit_code: int
    output: bytes


@dataclass
class FileInfo:
    """A file or folder of a volume."""

    name: str
    kind: str
    size: int
    modified: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileInfo:
        return cls(**_from(cls, data)[0])


class Table(list[T], Generic[T]):
    """A list that a notebook shows as a table (``_repr_html_``)."""

    columns: tuple[str, ...] = ()

    def _rows(self) -> Iterable[list[str]]:
        raise NotImplementedError

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self._rows()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class ResourceList(Table[Resource]):
    """A whole list, every page of it, and the ``resource_version`` a watch of the same
    objects starts from so that it misses nothing."""

    columns = ("NAME", "ZONE", "WORKSPACE", "PHASE", "CREATED")

    def __init__(self, items: Iterable[Resource] = (), resource_version: str = "") -> None:
        super().__init__(items)
        self.resource_version = resource_version

    def _rows(self) -> Iterable[list[str]]:
        for item in self:
            m = item.metadata
            yield [m.name, m.zone or "", m.workspace or "", item.phase or "", m.created or ""]


class FileList(Table[FileInfo]):
    """The entries of a volume's folder."""

    columns = ("NAME", "KIND", "SIZE", "MODIFIED")

    def _rows(self) -> Iterable[list[str]]:
        for item in self:
            yield [item.name, item.kind, str(item.size), str(item.modified)]
