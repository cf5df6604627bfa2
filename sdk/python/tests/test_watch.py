"""Watches that resume from their last resourceVersion when the API server restarts, and
the asyncio variant."""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
from typing import Any

from conftest import Cluster

from dora_sdk import AsyncClient, Client, WatchEvent

DEFINITION = """\
apiVersion: v1
kind: Definition
metadata: {name: sdkthings}
spec:
  names: {kind: Sdkthing, plural: sdkthings}
  scope: cluster
  schema:
    type: object
    properties:
      size: {type: integer}
"""


def thing(name: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Sdkthing",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


def test_a_watch_resumes_after_the_api_server_restarts(cluster: Cluster, client: Client) -> None:
    client.apply(DEFINITION)
    client.apply(thing("before", 1))
    events: queue.Queue[WatchEvent | BaseException] = queue.Queue()

    def follow() -> None:
        try:
            with Client() as watcher:
                for event in watcher.watch("sdkthings", reconnect_for=90, timeout=120):
                    events.put(event)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            events.put(e)

    threading.Thread(target=follow, daemon=True).start()

    def next_event() -> WatchEvent:
        item = events.get(timeout=60)
        if isinstance(item, BaseException):
            raise item
        return item

    def assert_quiet() -> None:
        try:
            extra = events.get(timeout=3)
        except queue.Empty:
            return
        raise AssertionError(f"an event came twice or from nowhere: {extra}")

    first = next_event()
    assert (first.type, first.object and first.object.name) == ("ADDED", "before")
    client.apply(thing("one", 1))
    seen = next_event()
    assert (seen.type, seen.object and seen.object.name) == ("ADDED", "one")

    # Mid-stream, the API server goes away; what is written once it is back (before and
    # after the watch reconnects) arrives once, in order, and nothing seen comes again.
    cluster.stop()
    cluster.start()
    with Client() as writer:
        writer.apply(thing("two", 2))
        writer.apply(thing("one", 5))
        writer.delete("sdkthing", "before")
        writer.apply(thing("three", 3))
    got = [next_event() for _ in range(4)]
    assert [(e.type, e.object and e.object.name) for e in got] == [
        ("ADDED", "two"),
        ("MODIFIED", "one"),
        ("DELETED", "before"),
        ("ADDED", "three"),
    ]
    assert got[1].object is not None and got[1].object.spec["size"] == 5
    versions = [e.resource_version for e in [seen, *got]]
    assert len(set(versions)) == len(versions)
    assert_quiet()
    # Killed without a word this time: the connection just drops.
    cluster.stop(signal.SIGKILL)
    cluster.start()
    client.apply(thing("four", 4))
    four = next_event()
    assert (four.type, four.object and four.object.name) == ("ADDED", "four")
    assert_quiet()
    for name in ("one", "two", "three", "four"):
        client.delete("sdkthing", name)
    client.delete("definition", "sdkthings", cascade=True)


def test_the_async_watch_and_wait(cluster: Cluster) -> None:
    async def run() -> list[tuple[str, str]]:
        async with AsyncClient() as dora:
            await dora.apply(DEFINITION)
            seen: list[tuple[str, str]] = []

            async def follow() -> None:
                async for event in dora.watch("sdkthing", timeout=30):
                    assert event.object is not None
                    seen.append((event.type, event.object.name))
                    if len(seen) == 2:
                        return

            task = asyncio.create_task(follow())
            await asyncio.sleep(0.5)
            await dora.apply(thing("async", 1))
            await dora.delete("sdkthing", "async")
            await asyncio.wait_for(task, 30)
            return seen

    assert asyncio.run(run()) == [("ADDED", "async"), ("DELETED", "async")]
