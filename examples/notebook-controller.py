#!/usr/bin/env python3
"""A controller of the `Notebook` kind (examples/definition.yaml) in Python, standard library
only, using nothing but Dora's HTTPS API: a controller can be written in any language.

For each Notebook it applies a Workload `nb-<notebook>` (zone --zone, the notebook's workspace;
Docker, its image, one replica, `spec.gpus` GPUs, label `notebook: <notebook>`) and writes the
Notebook's status {workload, phase: the Workload's status.phase, observedGeneration}; it deletes
the Workloads of deleted Notebooks, also those found at start. It lists Notebooks (all
workspaces) and the zone's Workloads labelled `notebook`, then watches both, resuming from the
last resourceVersion when a stream breaks, listing again after an ERROR event or a 410. Each
reconcile is logged in one line; a failed one is retried with backoff. SIGTERM/SIGINT stop it.

    dora up &                                    # writes the CLI profile to $DORA_CONFIG
    dora apply -f examples/definition.yaml       # (default ~/.config/dora/config.yaml)
    python3 examples/notebook-controller.py --profile-config ~/.config/dora/config.yaml
    dora get notebooks -o yaml; dora get workloads      # status.phase Running; nb-lab

--profile-config reads apiServer, ca and token of the profile --profile (default: `current`),
parsing the little YAML a CLI config holds without a YAML library. Explicit values win:
--api-server URL --ca CA.pem --token TOKEN (or DORA_API_SERVER, DORA_CA, DORA_TOKEN).
TLS trusts the given CA only.
"""

import argparse, http.client, json, logging, os, queue, signal, ssl, threading, time
import urllib.error, urllib.parse, urllib.request

log = logging.getLogger("notebook-controller")
FAILURES = (OSError, http.client.HTTPException, ValueError, KeyError)


def read_config(path):
    """Nested mappings of plain, quoted, `|` and `>` scalars: all a CLI config holds."""
    lines, root, i = open(path).read().splitlines(), {}, 0
    stack = [(-1, root)]
    while i < len(lines):
        line, i = lines[i], i + 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        name, _, value = line.strip().partition(":")
        value = value.strip()
        while stack[-1][0] >= indent:
            stack.pop()
        if not value:
            stack[-1][1][name] = child = {}
            stack.append((indent, child))
        elif value[0] in "|>":
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i][: indent + 1].isspace()):
                block, i = block + [lines[i].strip()], i + 1
            text = ("\n" if value[0] == "|" else " ").join(block).strip()
            stack[-1][1][name] = text + "\n" if value[0] == "|" else text
        else:
            stack[-1][1][name] = value.strip("'\"")
    return root


class ApiError(Exception):
    """An answer other than 2xx, with the API's {error: {reason, message, field}}."""

    def __init__(self, status, body):
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {"message": str(body)}
        field = f" (field {error['field']})" if error.get("field") else ""
        super().__init__(f"{status} {error.get('reason', '')}: {error.get('message')}{field}")
        self.status = status


class Api:
    def __init__(self, server, ca, token):
        self.server, self.token = server.rstrip("/"), token
        self.tls = ssl.create_default_context(cadata=ca)  # this CA only, not the system's

    def open(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(request, context=self.tls, timeout=timeout)
        except urllib.error.HTTPError as e:
            raw = e.read().decode(errors="replace")
            raise ApiError(e.code, json.loads(raw) if raw.startswith("{") else raw) from None

    def call(self, method, path, body=None):
        with self.open(method, path, body) as response:
            return json.loads(response.read() or b"null")

    def list(self, path, **params):
        """Every item, page by page, and the resourceVersion to watch from."""
        items, version, page = [], None, {}
        while True:
            query = urllib.parse.urlencode({**params, **page, "limit": 500})
            answer = self.call("GET", f"{path}?{query}")
            items += answer["items"]
            version = version or answer["metadata"]["resourceVersion"]
            if not answer["metadata"].get("continue"):
                return items, version
            page = {"continue": answer["metadata"]["continue"]}

    def watch(self, path, version, **params):
        query = urllib.parse.urlencode({**params, "watch": "true", "resourceVersion": version})
        # A bookmark comes every 30 s: 90 s of silence means the stream is dead.
        with self.open("GET", f"{path}?{query}", timeout=90) as response:
            yield from (json.loads(line) for line in response if line.strip())


def key(obj):
    return obj["metadata"].get("workspace", ""), obj["metadata"]["name"]


def labels_of(obj):
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


class Watched:
    """A collection's objects, kept by a list and a watch on a thread of its own."""

    def __init__(self, api, path, stop, on_change, **params):
        self.api, self.path, self.params = api, path, params
        self.stop, self.on_change = stop, on_change
        self.objects, self.lock, self.synced = {}, threading.Lock(), threading.Event()
        threading.Thread(target=self.follow, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return dict(self.objects)

    def remember(self, obj):
        """What a write answered, for a reconcile that comes before the write's event."""
        with self.lock:
            self.objects[key(obj)] = obj

    def follow(self):
        version, delay = None, 1
        while not self.stop.is_set():
            try:
                if version is None:
                    items, version = self.api.list(self.path, **self.params)
                    with self.lock:
                        old, self.objects = self.objects, {key(o): o for o in items}
                    for k in old.keys() | self.objects.keys():
                        self.on_change(old.get(k), self.objects.get(k))
                    self.synced.set()
                for event in self.api.watch(self.path, version, **self.params):
                    delay = 1
                    if event["type"] == "ERROR":
                        raise ApiError(event.get("status"), event)
                    version = event.get("resourceVersion", version)
                    if event["type"] == "BOOKMARK":
                        continue
                    obj, gone = event["object"], event["type"] == "DELETED"
                    with self.lock:
                        old = self.objects.pop(key(obj), None)
                        if not gone:
                            self.objects[key(obj)] = obj
                    self.on_change(old, None if gone else obj)
                log.info("watch %s ended; resuming from %s", self.path, version)
            except (ApiError, *FAILURES) as e:
                if isinstance(e, ApiError):
                    version = None  # an ERROR event or a refused watch (410): list again
                log.warning("watch %s: %s; again in %ss", self.path, e, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 30)


class NotebookController:
    def __init__(self, api, zone, stop):
        self.api, self.zone, self.stop = api, zone, stop
        self.queue, self.queued, self.failures = queue.Queue(), set(), {}
        self.notebooks = Watched(api, "/v1/notebooks", stop, self.notebook_changed)
        self.workloads = Watched(api, f"/v1/zones/{zone}/workloads", stop, self.workload_changed,
                                 labelSelector="notebook")

    def enqueue(self, ws, name, trigger):
        if (ws, name) not in self.queued:
            self.queued.add((ws, name))
            self.queue.put((ws, name, trigger))

    def notebook_changed(self, old, new):
        self.enqueue(*key(new or old), "changed")

    def workload_changed(self, old, new):
        # A DELETED event carries only names: the labels are those seen last.
        notebook = (labels_of(new) or labels_of(old)).get("notebook")
        if notebook:
            self.enqueue(key(new or old)[0], notebook, "related")

    def reconcile(self, ws, name):
        notebook = self.notebooks.snapshot().get((ws, name))
        if notebook is None:
            deleted = []
            for (w, workload), obj in self.workloads.snapshot().items():
                if w == ws and labels_of(obj).get("notebook") == name:
                    path = f"/v1/zones/{self.zone}/workspaces/{ws}/workloads/{workload}"
                    try:
                        self.api.call("DELETE", path)
                    except ApiError as e:
                        if e.status != 404:
                            raise
                    deleted.append(workload)
            return f"deleted={','.join(deleted)}" if deleted else "nothing to do"
        spec, workload = notebook["spec"], f"nb-{name}"
        wanted = {"replica": {"count": 1}, "driver": "Docker", "image": {"image": spec["image"]},
                  "config": {"restartPolicy": "Always"}}
        if spec.get("gpus", 0) > 0:
            wanted["selectors"] = {"gpu": {"product_name": "All", "count": spec["gpus"]}}
        manifest = {"apiVersion": "v1", "kind": "Workload", "spec": wanted,
                    "metadata": {"name": workload, "labels": {"notebook": name}}}
        query = urllib.parse.urlencode({"zone": self.zone, "workspace": ws})
        applied = self.api.call("POST", f"/v1/apply?{query}", manifest)["results"][0]
        if "error" in applied:
            raise ApiError(422, applied)
        running = self.workloads.snapshot().get((ws, workload)) or {}
        status = {
            "workload": workload,
            "phase": (running.get("status") or {}).get("phase", "Pending"),
            "observedGeneration": notebook["metadata"]["generation"],
        }
        current = notebook.get("status") or {}
        written = any(current.get(k) != v for k, v in status.items())
        if written:
            path = f"/v1/workspaces/{ws}/notebooks/{name}/status"
            self.notebooks.remember(self.api.call("PATCH", path, status))
        return "workload={}:{} phase={} status={}".format(
            workload, applied["outcome"], status["phase"], "written" if written else "unchanged"
        )

    def run(self):
        # Reconcile only once both lists are in: a Workload's notebook may not be listed yet.
        while not (self.notebooks.synced.wait(0.5) and self.workloads.synced.wait(0.5)):
            if self.stop.is_set():
                return
        counts = len(self.notebooks.snapshot()), len(self.workloads.snapshot())
        log.info("synced: %d notebooks, %d workloads", *counts)
        while not self.stop.is_set():
            try:
                ws, name, trigger = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.queued.discard((ws, name))
            span = f"reconcile{{kind=Notebook workspace={ws} name={name} trigger={trigger}}}:"
            started = time.monotonic()
            try:
                outcome = self.reconcile(ws, name)
                self.failures.pop((ws, name), None)
                took = (time.monotonic() - started) * 1000
                log.info("%s reconciled result=ok duration_ms=%.1f %s", span, took, outcome)
            except (ApiError, *FAILURES) as e:
                failures = self.failures[(ws, name)] = self.failures.get((ws, name), 0) + 1
                delay = min(2 ** (failures - 1), 60)
                took = (time.monotonic() - started) * 1000
                log.warning("%s reconcile failed result=error duration_ms=%.1f error=%r "
                            "retry_in=%ss", span, took, str(e), delay)
                retry = threading.Timer(delay, self.enqueue, (ws, name, "retry"))
                retry.daemon = True
                retry.start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-server", default=os.environ.get("DORA_API_SERVER"))
    parser.add_argument("--ca", default=os.environ.get("DORA_CA"), help="the cluster CA (PEM)")
    parser.add_argument("--token", default=os.environ.get("DORA_TOKEN"))
    parser.add_argument("--profile-config", help="a CLI config (`dora up` writes one) to read from")
    parser.add_argument("--profile", help="the profile in it (default: its `current`)")
    parser.add_argument("--zone", default="default", help="the zone of the Workloads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)5s %(message)s")
    logging.Formatter.converter = time.gmtime
    server, token = args.api_server, args.token
    ca = open(os.path.expanduser(args.ca)).read() if args.ca else None
    if args.profile_config:
        config = read_config(os.path.expanduser(args.profile_config))
        profile = config.get("profiles", {}).get(args.profile or config.get("current"), {})
        server = server or profile.get("apiServer")
        ca, token = ca or profile.get("ca"), token or profile.get("token")
    missing = [n for n, v in [("--api-server", server), ("--ca", ca), ("--token", token)] if not v]
    if missing:
        parser.error(f"missing {', '.join(missing)}: give them, or a --profile-config holding them")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("controlling notebooks at %s, zone %s", server, args.zone)
    NotebookController(Api(server, ca, token), args.zone, stop).run()
    log.info("stopped")


if __name__ == "__main__":
    main()
