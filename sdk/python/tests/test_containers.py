"""Waits, logs, exec exit codes, credits and volume files against containers the Process
driver runs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import Cluster

from dora_sdk import Client, WaitTimeout

WORKLOAD = """\
apiVersion: v1
kind: Workload
metadata: {name: sdk.echo}
spec:
  replica: {count: 1}
  driver: Process
  config:
    cmd: ["sh", "-c", "echo hello from sdk; echo second line; sleep 3600"]
  selectors:
    cpu: {product_name: All, count: 100m}
"""


def test_wait_logs_and_exec(client: Client) -> None:
    client.apply(WORKLOAD)
    workload = client.get("workload", "sdk.echo")
    with pytest.raises(WaitTimeout):
        client.wait_until(workload, "NoSuchPhase", timeout=1)
    assert client.wait_until(workload, "Running", timeout=60).phase == "Running"
    container = client.wait_until("container", "Running", "sdk.echo.0", timeout=60)
    assert container.metadata.name == "sdk.echo.0"

    client.wait_for(
        "container", "sdk.echo.0", lambda _: "second line" in client.logs("sdk.echo.0"), timeout=30
    )
    assert client.logs("sdk.echo.0").startswith("hello from sdk")
    assert client.logs("sdk.echo.0", tail=1).strip() == "second line"
    followed = client.follow_logs("sdk.echo.0")
    assert next(followed) == "hello from sdk"
    followed.close()

    ran = client.exec("sdk.echo.0", ["sh", "-c", "echo inside $DORA_CONTAINER; exit 4"])
    assert ran.exit_code == 4
    assert b"inside sdk.echo.0" in ran.output
    typed = client.exec("sdk.echo.0", ["sh"], stdin=b"echo typed; exit 6\n")
    assert (typed.exit_code, typed.output.strip()) == (6, b"typed")
    assert client.exec("sdk.echo.0", ["true"]).exit_code == 0

    # The credit system counts the running container against its user's account.
    user = client.whoami()["user"]
    client.wait_for(
        "usercredit",
        user,
        lambda a: a is not None and "default/sdk.echo" in a.status["computed"].get("workloads", {}),
        timeout=60,
    )
    accounts = client.credits()
    assert [a.spec["user"] for a in accounts] == [user]
    assert "<td>" + user + "</td>" in accounts._repr_html_()

    client.delete("workload", "sdk.echo")
    client.wait_deleted("container", "sdk.echo.0", timeout=60)


def test_volume_files_round_trip_with_progress(
    cluster: Cluster, client: Client, tmp_path: Path
) -> None:
    cluster.storage.mkdir(exist_ok=True)
    client.apply(
        f"apiVersion: v1\nkind: Storage\nmetadata: {{name: sdk-local}}\n"
        f"spec: {{kind: Local, mountpath: {cluster.storage}}}\n---\n"
        "apiVersion: v1\nkind: Volume\nmetadata: {name: sdk-data}\nspec: {storage: sdk-local}\n"
    )
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(3_000_000))
    sent: list[tuple[int, int]] = []
    answer = client.upload(
        "sdk-data", source, "models/", progress=lambda done, total: sent.append((done, total))
    )
    assert answer["complete"] is True
    assert sent[0] == (0, 3_000_000) and sent[-1] == (3_000_000, 3_000_000)
    assert [f.name for f in client.ls("sdk-data", "models")] == ["weights.bin"]
    assert "<td>weights.bin</td>" in client.ls("sdk-data", "models")._repr_html_()

    came: list[int] = []
    back = client.download(
        "sdk-data",
        "models/weights.bin",
        tmp_path / "back.bin",
        progress=lambda done, _: came.append(done),
    )
    assert came[-1] == 3_000_000
    assert (
        hashlib.sha256(back.read_bytes()).hexdigest()
        == hashlib.sha256(source.read_bytes()).hexdigest()
    )

    # An interrupted upload left its first megabyte; the next upload resumes there.
    folder = cluster.storage / "default" / "sdk-data" / "models"
    (folder / ".resumed.bin.dora-upload").write_bytes(source.read_bytes()[:1_000_000])
    resumed: list[int] = []
    client.upload("sdk-data", source, "models/resumed.bin", progress=lambda d, _: resumed.append(d))
    assert resumed[0] == 1_000_000 and resumed[-1] == 3_000_000
    again = client.download("sdk-data", "models/resumed.bin", tmp_path)
    assert again == tmp_path / "resumed.bin"
    assert again.read_bytes() == source.read_bytes()

    # Uploads keep the file's time; a recursive listing names the tree's files by path.
    listed = {f.name: f for f in client.ls("sdk-data", recursive=True)}
    assert {"models", "models/weights.bin", "models/resumed.bin"} <= listed.keys()
    assert listed["models/weights.bin"].modified == source.stat().st_mtime_ns // 1_000_000

    # An interrupted download left its first megabyte; the next download resumes there.
    remote = listed["models/weights.bin"]
    part = tmp_path / f"cut.bin.{remote.size}-{remote.modified}.dora-download"
    part.write_bytes(source.read_bytes()[:1_000_000])
    finished: list[int] = []
    cut = client.download(
        "sdk-data",
        "models/weights.bin",
        tmp_path / "cut.bin",
        progress=lambda d, _: finished.append(d),
    )
    assert finished[0] == 1_000_000 and finished[-1] == 3_000_000
    assert cut.read_bytes() == source.read_bytes() and not part.exists()
    with pytest.raises(ValueError, match="leaves the volume"):
        client.download("sdk-data", "../escape", tmp_path)
