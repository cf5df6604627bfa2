"""The blocking client."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import websockets.sync.client
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import _core
from ._core import KindRef, Kinds, Place
from .config import Settings
from .errors import ApiError, NotFound, StreamError, WaitTimeout
from .models import ExecResult, FileInfo, FileList, KindInfo, Resource, ResourceList, WatchEvent

if TYPE_CHECKING:
    from typing_extensions import Self

Progress = Callable[[int, int], None]
"""Called with the bytes done so far and the total, as a transfer goes."""

Condition = Callable[[Resource | None], bool]
"""What a wait waits for: given the object as it is now (``None`` while it does not exist)."""

_CHUNK = 256 << 10


class Client:
    """A connection to one Dora API server as one token.

    ``Client()`` uses the CLI's current profile (``$DORA_CONFIG``, else
    ``~/.config/dora/config.yaml``, as ``dora up`` writes it); ``Client(profile="prod")`` a
    named one; ``Client(url, token, ca)`` explicit settings, ``ca`` being PEM text or a file.
    ``zone`` and ``workspace`` are where calls that name none go (default: the profile's,
    else the token's). Every call has a deadline of ``timeout`` seconds; streams are kept to
    an idle deadline instead.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        ca: str | os.PathLike[str] | None = None,
        *,
        profile: str | None = None,
        zone: str | None = None,
        workspace: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.settings: Settings = _core.settings(url, token, ca, profile, zone, workspace)
        self.timeout = timeout
        self._ssl = self.settings.ssl_context()
        self._http = httpx.Client(
            base_url=self.settings.url,
            verify=self._ssl,
            headers={
                "Authorization": f"Bearer {self.settings.token}",
                "User-Agent": "dora-sdk-python/0.1",
            },
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        self._kinds: Kinds | None = None
        self._place: Place | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Sends a request; an answer other than success raises :class:`ApiError`."""
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @property
    def place(self) -> Place:
        if self._place is None:
            zone, workspace = self.settings.zone, self.settings.workspace
            if zone is None or workspace is None:
                me = self.whoami()
                zone, workspace = zone or me.get("zone"), workspace or me.get("workspace")
            self._place = Place(zone, workspace)
        return self._place

    def kinds(self, refresh: bool = False) -> list[KindInfo]:
        """Every kind the API serves now, built-in and defined at run time."""
        if self._kinds is None or refresh:
            self._kinds = Kinds(self._json("GET", "/v1/kinds")["items"])
        return self._kinds.all()

    def kind(self, kind: KindRef) -> KindInfo:
        """A kind by name, plural or alias, in any case; kinds defined since the client last
        asked are learnt on the way."""
        if isinstance(kind, KindInfo):
            return kind
        self.kinds()
        assert self._kinds is not None
        found = self._kinds.find(kind) or (self.kinds(refresh=True) and self._kinds.find(kind))
        if not found:
            raise NotFound(404, "NotFound", f"no kind {kind!r}; see client.kinds()")
        return found

    def collection_path(
        self, kind: KindRef, *, zone: str | None = None, workspace: str | None = None
    ) -> str:
        return self.place.collection(self.kind(kind), zone, workspace)

    def object_path(
        self, kind: KindRef, name: str, *, zone: str | None = None, workspace: str | None = None
    ) -> str:
        return self.place.object(self.kind(kind), name, zone, workspace)

    # --- objects ----------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The caller: ``user`` and the token's default ``zone`` and ``workspace``."""
        answer: dict[str, Any] = self._json("GET", "/v1/whoami")
        return answer

    def apply(
        self,
        source: Any,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Creates or updates the objects of ``source`` (YAML text, a ``Path`` to a file or
        folder, a dict, a :class:`Resource`, or a list of them) as ``dora apply`` does, and
        returns what each document came to. A refused document raises :class:`ApiError`
        naming the document and field; its ``results`` tell what became of the others. With
        ``dry_run``, nothing is written: each result's ``dryRun`` holds the stored spec
        (``current``) and the one the apply would write (``applied``)."""
        body, content_type = _core.manifest(source)
        params = {k: v for k, v in (("zone", zone), ("workspace", workspace)) if v}
        if dry_run:
            params["dryRun"] = "true"
        answer = self._json(
            "POST",
            "/v1/apply",
            content=body,
            params=params,
            headers={"Content-Type": content_type},
        )
        results: list[dict[str, Any]] = answer["results"]
        if any(r.get("kind") == "Definition" for r in results):
            self._kinds = None  # its kind is served now
        return results

    def get(
        self, kind: KindRef, name: str, *, zone: str | None = None, workspace: str | None = None
    ) -> Resource:
        """One object; :class:`NotFound` when it does not exist."""
        return Resource.from_dict(
            self._json("GET", self.object_path(kind, name, zone=zone, workspace=workspace))
        )

    def list(
        self,
        kind: KindRef,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> ResourceList:
        """Every object of a kind in a zone and workspace (as its scope has them) matching
        ``label_selector`` (kubectl's syntax), page by page."""
        path = self.collection_path(kind, zone=zone, workspace=workspace)
        params: dict[str, str] = {"limit": str(_core.PAGE)}
        if label_selector:
            params["labelSelector"] = label_selector
        if node:
            params["node"] = node
        items = ResourceList()
        while True:
            page = self._json("GET", path, params=params)
            items.extend(Resource.from_dict(item) for item in page.get("items", []))
            meta = page.get("metadata") or {}
            if meta.get("continue"):
                params["continue"] = meta["continue"]
                continue
            items.resource_version = str(meta.get("resourceVersion") or "")
            return items

    def delete(
        self,
        kind: KindRef,
        name: str,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        version: int | None = None,
        cascade: bool = False,
    ) -> Resource:
        """Deletes one object (only at spec ``version`` when given) and returns it as it
        was; a Definition with ``cascade=True`` also deletes the objects of its kind."""
        params: dict[str, str] = {}
        if version is not None:
            params["version"] = str(version)
        if cascade:
            params["cascade"] = "true"
        path = self.object_path(kind, name, zone=zone, workspace=workspace)
        return Resource.from_dict(self._json("DELETE", path, params=params))

    # --- watching and waiting ---------------------------------------------------------

    def watch(
        self,
        kind: KindRef,
        name: str | None = None,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        bookmarks: bool = False,
        reconnect_for: float = 60.0,
        timeout: float | None = None,
    ) -> Iterator[WatchEvent]:
        """The changes to a kind's collection (or to one object, ``name``), as long as the
        caller iterates. Without ``resource_version`` the current objects come first as
        ADDED. When the connection drops or the server restarts, the watch resumes from the
        last ``resourceVersion`` it saw, so no event is lost or repeated; it gives up (with
        :class:`StreamError`) after ``reconnect_for`` seconds without a connection. A 410
        (the version is older than the change feed keeps) raises :class:`ApiError`: list
        again. ``timeout`` ends the iteration after that many seconds."""
        return self._watch(
            kind,
            name,
            zone=zone,
            workspace=workspace,
            label_selector=label_selector,
            resource_version=resource_version,
            bookmarks=bookmarks,
            reconnect_for=reconnect_for,
            timeout=timeout,
            opened=None,
        )

    def _watch(
        self,
        kind: KindRef,
        name: str | None,
        *,
        zone: str | None,
        workspace: str | None,
        label_selector: str | None,
        resource_version: str | None,
        bookmarks: bool,
        reconnect_for: float,
        timeout: float | None,
        opened: Callable[[], WatchEvent] | None,
    ) -> Iterator[WatchEvent]:
        """:meth:`watch`, yielding what ``opened`` returns once the first connection's
        position in the change feed is fixed (its answer has come)."""
        info = self.kind(kind)
        deadline = None if timeout is None else time.monotonic() + timeout
        if name is None:
            path = self.collection_path(info, zone=zone, workspace=workspace)
        else:
            path = self.object_path(info, name, zone=zone, workspace=workspace)
        version = resource_version
        if version is None and name is None:
            listed = self.list(info, zone=zone, workspace=workspace, label_selector=label_selector)
            for item in listed:
                yield WatchEvent("ADDED", item, listed.resource_version)
            version = listed.resource_version
        params: dict[str, str] = {"watch": "true"}
        if label_selector:
            params["labelSelector"] = label_selector
        failing_since: float | None = None
        pause = 0.2
        while deadline is None or time.monotonic() < deadline:
            if version is not None:
                params["resourceVersion"] = version
            if deadline is not None:
                # The server's keep-alive bookmarks would keep the read timeout from firing.
                params["timeoutSeconds"] = str(math.ceil(deadline - time.monotonic()))
            read = (
                _core.IDLE
                if deadline is None
                else max(0.01, min(_core.IDLE, deadline - time.monotonic()))
            )
            try:
                with self._http.stream(
                    "GET", path, params=params, timeout=httpx.Timeout(self.timeout, read=read)
                ) as response:
                    if response.is_error:
                        response.read()
                        raise ApiError.from_response(response)
                    failing_since, pause = None, 0.2
                    if opened is not None:
                        yield opened()
                        opened = None
                    for line in response.iter_lines():
                        if not line.strip():
                            continue
                        event = _core.parse_event(line)
                        version = event.resource_version or version
                        if event.type != "BOOKMARK" or bookmarks:
                            yield event
            except httpx.ReadTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    return
            except (httpx.TransportError, ApiError) as error:
                if isinstance(error, ApiError) and not _core.retryable(error):
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_for:
                    raise StreamError(
                        f"the watch of {path} could not reconnect for {reconnect_for:.0f} s: {error}"
                    ) from error
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def wait_for(
        self,
        kind: KindRef,
        name: str,
        condition: Condition,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        timeout: float = 60.0,
    ) -> Resource | None:
        """Waits until ``condition`` holds for an object (given ``None`` while it does not
        exist) and returns the object; :class:`WaitTimeout` after ``timeout`` seconds."""

        def now() -> WatchEvent:
            # Read after the watch has started, so no change after this read is missed.
            try:
                return WatchEvent("ADDED", self.get(kind, name, zone=zone, workspace=workspace), "")
            except NotFound:
                return WatchEvent("DELETED", None, "")

        last: Resource | None = None
        events = self._watch(
            kind,
            name,
            zone=zone,
            workspace=workspace,
            label_selector=None,
            resource_version=None,
            bookmarks=False,
            reconnect_for=60.0,
            timeout=timeout,
            opened=now,
        )
        for event in events:
            last = None if event.type == "DELETED" else event.object
            if condition(last):
                return last
        raise WaitTimeout(
            f"{self.kind(kind).name} {name} did not reach the condition within {timeout} s", last
        )

    def wait_until(
        self,
        target: Resource | KindRef,
        phase: str | tuple[str, ...],
        name: str | None = None,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        timeout: float = 60.0,
    ) -> Resource:
        """Waits until an object's ``status.phase`` is ``phase`` (or one of them):
        ``wait_until(workload, "Running")`` or ``wait_until("container", "Succeeded",
        "job.0")``; returns the object."""
        if isinstance(target, Resource):
            kind: KindRef = target.kind
            name = target.name
            zone = zone or target.metadata.zone
            workspace = workspace or target.metadata.workspace
        else:
            kind = target
        if name is None:
            raise ValueError("name the object to wait for")
        wanted = (phase,) if isinstance(phase, str) else phase
        found = self.wait_for(
            kind,
            name,
            lambda o: o is not None and o.phase in wanted,
            zone=zone,
            workspace=workspace,
            timeout=timeout,
        )
        assert found is not None
        return found

    def wait_deleted(
        self,
        kind: KindRef,
        name: str,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Waits until an object no longer exists."""
        self.wait_for(
            kind, name, lambda o: o is None, zone=zone, workspace=workspace, timeout=timeout
        )

    # --- containers -------------------------------------------------------------------

    def logs(
        self,
        container: str,
        *,
        tail: int | None = None,
        previous: bool = False,
        zone: str | None = None,
        workspace: str | None = None,
    ) -> str:
        """A container's output so far (the last ``tail`` lines; the run before the current
        one with ``previous``)."""
        params = self._log_params(tail, previous)
        path = self.object_path("Container", container, zone=zone, workspace=workspace) + "/logs"
        return self.request("GET", path, params=params).text

    def follow_logs(
        self,
        container: str,
        *,
        tail: int | None = None,
        zone: str | None = None,
        workspace: str | None = None,
    ) -> Iterator[str]:
        """A container's output line by line as it comes, until the container ends or the
        caller stops iterating."""
        params = self._log_params(tail, False)
        params["follow"] = "true"
        path = self.object_path("Container", container, zone=zone, workspace=workspace) + "/logs"
        with self._http.stream(
            "GET", path, params=params, timeout=httpx.Timeout(self.timeout, read=None)
        ) as response:
            if response.is_error:
                response.read()
                raise ApiError.from_response(response)
            yield from response.iter_lines()

    @staticmethod
    def _log_params(tail: int | None, previous: bool) -> dict[str, str]:
        params = {}
        if tail is not None:
            params["tail"] = str(tail)
        if previous:
            params["previous"] = "true"
        return params

    def exec(
        self,
        container: str,
        command: Sequence[str],
        *,
        stdin: bytes | None = None,
        tty: bool = False,
        on_output: Callable[[bytes], None] | None = None,
        zone: str | None = None,
        workspace: str | None = None,
    ) -> ExecResult:
        """Runs ``command`` in a container over the exec WebSocket, as ``dora shell`` does:
        sends ``stdin`` then its end, gathers the output (also given to ``on_output`` as it
        comes) and returns the command's exit code with it."""
        path = self.object_path("Container", container, zone=zone, workspace=workspace) + "/exec"
        query = httpx.QueryParams(
            {"tty": "true" if tty else "false", "command": json.dumps(list(command))}
        )
        url = "wss" + self.settings.url.removeprefix("https") + path + "?" + str(query)
        try:
            socket = websockets.sync.client.connect(
                url,
                ssl=self._ssl,
                additional_headers={"Authorization": f"Bearer {self.settings.token}"},
                open_timeout=self.timeout,
                max_size=None,
            )
        except InvalidStatus as refused:
            try:
                body = json.loads(refused.response.body or b"null")
            except ValueError:
                body = None
            raise ApiError.from_body(refused.response.status_code, body) from refused
        except OSError as e:
            raise StreamError(f"cannot reach the API server at {self.settings.url}: {e}") from e
        output = bytearray()
        exit_code: int | None = None
        with socket:
            try:
                if stdin:
                    socket.send(stdin)
                socket.send(json.dumps("eof"))
            except ConnectionClosed:
                pass  # the command ended first; its output and exit code are still to read
            try:
                for message in socket:
                    if isinstance(message, bytes):
                        output += message
                        if on_output:
                            on_output(message)
                    else:
                        end = json.loads(message)
                        if isinstance(end, dict) and isinstance(end.get("exitCode"), int):
                            exit_code = end["exitCode"]
            except ConnectionClosed as e:  # closed without a close frame
                if exit_code is None:
                    raise StreamError(f"the exec session broke: {e}") from e
        if exit_code is None:
            raise StreamError("the exec session ended without an exit code")
        return ExecResult(exit_code=exit_code, output=bytes(output))

    # --- volumes ----------------------------------------------------------------------

    def _files(self, volume: str, path: str, zone: str | None, workspace: str | None) -> str:
        return (
            self.object_path("Volume", volume, zone=zone, workspace=workspace)
            + "/files/"
            + _core.file_path(path)
        )

    def ls(
        self,
        volume: str,
        path: str = "",
        *,
        recursive: bool = False,
        zone: str | None = None,
        workspace: str | None = None,
    ) -> FileList:
        """The entries of a folder of a volume; with ``recursive``, everything under it, each
        named by its path from the folder."""
        params = {"recursive": "true"} if recursive else {}
        answer = self._json("GET", self._files(volume, path, zone, workspace), params=params)
        if "items" not in answer:
            raise ValueError(f"{path!r} is a file, not a folder; download() fetches it")
        return FileList(FileInfo.from_dict(item) for item in answer["items"])

    def upload(
        self,
        volume: str,
        source: str | os.PathLike[str],
        path: str = "",
        *,
        progress: Progress | None = None,
        restart: bool = False,
        zone: str | None = None,
        workspace: str | None = None,
    ) -> dict[str, Any]:
        """Uploads the file ``source`` to ``path`` in a volume (its own name in the top folder
        when ``path`` is empty or ends with ``/``), resuming an interrupted upload unless
        ``restart``; ``progress(done, total)`` is called as bytes go. The file keeps its
        modification time, as ``dora upload`` keeps it."""
        source = Path(source)
        if not path or path.endswith("/"):
            path = path + source.name
        stat = source.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns // 1_000_000
        url = self._files(volume, path, zone, workspace)
        offset = 0
        if not restart:
            arrived = self._json("GET", url, params={"upload": "true"})
            offset = min(int(arrived.get("uploaded") or 0), size)

        def chunks() -> Iterator[bytes]:
            done = offset
            if progress:
                progress(done, size)
            with source.open("rb") as file:
                file.seek(offset)
                while chunk := file.read(_CHUNK):
                    yield chunk
                    done += len(chunk)
                    if progress:
                        progress(done, size)

        answer: dict[str, Any] = self._json(
            "PUT",
            url,
            params={"offset": str(offset), "size": str(size), "mtime": str(mtime)},
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(self.timeout, write=None, read=None),
        )
        if answer.get("complete") is not True:
            raise StreamError(
                f"the upload stopped at byte {answer.get('uploaded')} of {size}; upload again to resume"
            )
        return answer

    def download(
        self,
        volume: str,
        path: str,
        destination: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        zone: str | None = None,
        workspace: str | None = None,
    ) -> Path:
        """Downloads the file ``path`` of a volume to ``destination`` (a file, or a folder to
        put it in under its own name) and returns where it went; ``progress(done, total)``
        is called as bytes come. An interrupted download resumes where it stopped, unless the
        file changed meanwhile (its part file is named by the file's size and time)."""
        target = Path(destination)
        if target.is_dir():
            target = target / [p for p in path.split("/") if p][-1]
        url = self._files(volume, path, zone, workspace)
        remote = FileInfo.from_dict(self._json("GET", url, params={"stat": "true"}))
        if remote.kind == "dir":
            raise ValueError(f"{path!r} is a folder; ls() lists it")
        partial = target.with_name(f"{target.name}.{remote.size}-{remote.modified}.dora-download")
        offset = min(partial.stat().st_size, remote.size) if partial.exists() else 0
        with self._http.stream(
            "GET",
            url,
            params={"offset": str(offset)},
            timeout=httpx.Timeout(self.timeout, read=_core.IDLE),
        ) as response:
            if response.is_error:
                response.read()
                raise ApiError.from_response(response)
            total = offset + int(response.headers.get("content-length") or 0)
            done = offset
            if progress:
                progress(done, total)
            with partial.open("r+b" if offset else "wb") as file:
                file.seek(offset)
                file.truncate()
                for chunk in response.iter_bytes(_CHUNK):
                    file.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        partial.replace(target)
        return target

    # --- credits ----------------------------------------------------------------------

    def credits(self, *, zone: str | None = None) -> ResourceList:
        """The credit accounts (Usercredit) of a zone the caller may read: use this week,
        limit, total and next reset under each one's ``status["computed"]``."""
        return self.list("Usercredit", zone=zone)
