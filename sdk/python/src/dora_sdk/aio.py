"""The asynchronous client, for programs on asyncio: objects, watch and waits."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from . import _core
from ._core import KindRef, Kinds, Place
from .client import Condition
from .config import Settings
from .errors import ApiError, NotFound, StreamError, WaitTimeout
from .models import KindInfo, Resource, ResourceList, WatchEvent

if TYPE_CHECKING:
    from typing_extensions import Self


class AsyncClient:
    """:class:`dora_sdk.Client`'s object calls and watch, awaitable; the same settings."""

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
        self._http = httpx.AsyncClient(
            base_url=self.settings.url,
            verify=self.settings.ssl_context(),
            headers={
                "Authorization": f"Bearer {self.settings.token}",
                "User-Agent": "dora-sdk-python/0.1",
            },
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        self._kinds: Kinds | None = None
        self._place: Place | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Sends a request; an answer other than success raises :class:`ApiError`."""
        response = await self._http.request(method, path, **kwargs)
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    async def _where(self) -> Place:
        if self._place is None:
            zone, workspace = self.settings.zone, self.settings.workspace
            if zone is None or workspace is None:
                me = await self._json("GET", "/v1/whoami")
                zone, workspace = zone or me.get("zone"), workspace or me.get("workspace")
            self._place = Place(zone, workspace)
        return self._place

    async def kind(self, kind: KindRef) -> KindInfo:
        """A kind by name, plural or alias; kinds defined since are learnt on the way."""
        if isinstance(kind, KindInfo):
            return kind
        for refresh in (False, True):
            if self._kinds is None or refresh:
                self._kinds = Kinds((await self._json("GET", "/v1/kinds"))["items"])
            found = self._kinds.find(kind)
            if found:
                return found
        raise NotFound(404, "NotFound", f"no kind {kind!r}; see client.kinds()")

    async def _path(
        self, kind: KindRef, name: str | None, zone: str | None, workspace: str | None
    ) -> str:
        info, place = await self.kind(kind), await self._where()
        if name is None:
            return place.collection(info, zone, workspace)
        return place.object(info, name, zone, workspace)

    async def apply(
        self,
        source: Any,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """As :meth:`dora_sdk.Client.apply`."""
        body, content_type = _core.manifest(source)
        params = {k: v for k, v in (("zone", zone), ("workspace", workspace)) if v}
        if dry_run:
            params["dryRun"] = "true"
        answer = await self._json(
            "POST", "/v1/apply", content=body, params=params, headers={"Content-Type": content_type}
        )
        results: list[dict[str, Any]] = answer["results"]
        if any(r.get("kind") == "Definition" for r in results):
            self._kinds = None  # its kind is served now
        return results

    async def get(
        self, kind: KindRef, name: str, *, zone: str | None = None, workspace: str | None = None
    ) -> Resource:
        return Resource.from_dict(
            await self._json("GET", await self._path(kind, name, zone, workspace))
        )

    async def list(
        self,
        kind: KindRef,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        label_selector: str | None = None,
    ) -> ResourceList:
        path = await self._path(kind, None, zone, workspace)
        params: dict[str, str] = {"limit": str(_core.PAGE)}
        if label_selector:
            params["labelSelector"] = label_selector
        items = ResourceList()
        while True:
            page = await self._json("GET", path, params=params)
            items.extend(Resource.from_dict(item) for item in page.get("items", []))
            meta = page.get("metadata") or {}
            if meta.get("continue"):
                params["continue"] = meta["continue"]
                continue
            items.resource_version = str(meta.get("resourceVersion") or "")
            return items

    async def delete(
        self,
        kind: KindRef,
        name: str,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        version: int | None = None,
    ) -> Resource:
        params = {} if version is None else {"version": str(version)}
        path = await self._path(kind, name, zone, workspace)
        return Resource.from_dict(await self._json("DELETE", path, params=params))

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
    ) -> AsyncIterator[WatchEvent]:
        """As :meth:`dora_sdk.Client.watch`: resumes from the last ``resourceVersion`` after
        a dropped connection or a restarted server."""
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

    async def _watch(
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
        opened: Callable[[], Awaitable[WatchEvent]] | None,
    ) -> AsyncIterator[WatchEvent]:
        """:meth:`watch`, yielding what ``opened`` gives once the first connection's
        position in the change feed is fixed (its answer has come)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        path = await self._path(kind, name, zone, workspace)
        version = resource_version
        if version is None and name is None:
            listed = await self.list(
                kind, zone=zone, workspace=workspace, label_selector=label_selector
            )
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
                async with self._http.stream(
                    "GET", path, params=params, timeout=httpx.Timeout(self.timeout, read=read)
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise ApiError.from_response(response)
                    failing_since, pause = None, 0.2
                    if opened is not None:
                        yield await opened()
                        opened = None
                    async for line in response.aiter_lines():
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
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def wait_for(
        self,
        kind: KindRef,
        name: str,
        condition: Condition,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        timeout: float = 60.0,
    ) -> Resource | None:
        """As :meth:`dora_sdk.Client.wait_for`."""

        async def now() -> WatchEvent:
            # Read after the watch has started, so no change after this read is missed.
            try:
                found = await self.get(kind, name, zone=zone, workspace=workspace)
                return WatchEvent("ADDED", found, "")
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
        async for event in events:
            last = None if event.type == "DELETED" else event.object
            if condition(last):
                return last
        raise WaitTimeout(f"{kind} {name} did not reach the condition within {timeout} s", last)

    async def wait_until(
        self,
        kind: KindRef,
        phase: str | tuple[str, ...],
        name: str,
        *,
        zone: str | None = None,
        workspace: str | None = None,
        timeout: float = 60.0,
    ) -> Resource:
        """Waits until an object's ``status.phase`` is ``phase`` (or one of them)."""
        wanted = (phase,) if isinstance(phase, str) else phase
        found = await self.wait_for(
            kind,
            name,
            lambda o: o is not None and o.phase in wanted,
            zone=zone,
            workspace=workspace,
            timeout=timeout,
        )
        assert found is not None
        return found
