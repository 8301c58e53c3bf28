"""The HTTP API's resources on a real lab: `shoal serve` as a subprocess, real HTTP over its
Unix socket through two clients (httpx with a UDS transport, and shoal.client): the CLI's
caret on a bad selection, 404s, 413, a run followed to completion, a push with per-node
progress, versions and rollback, SSE resumed exactly with Last-Event-ID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.client import PROTOCOL, PROTOCOL_HEADER, ServiceClient
from shoal.errors import SelectionSyntaxError, ShoalError, UnknownNameError
from shoal.nodes.inventory import import_nodes
from shoal.state import State

from .conftest import remote, unique_lab_name

pytestmark = pytest.mark.lab

SERVE = (
    "import os, pathlib; from shoal.control.controller import ServiceConfig; "
    "from shoal.service.servedaemon import serve; "
    "serve(ServiceConfig(pathlib.Path(os.environ['SHOAL_HOME']), stream_heartbeat=0.3, "
    "sweep_interval=0))"
)


@pytest.fixture
def api(lab: Any, tmp_path: Path) -> Iterator[tuple[ServiceClient, httpx.Client, Path]]:
    """A service over its own state directory holding the lab's nodes; always stopped."""
    home = tmp_path / "svc"
    home.mkdir(mode=0o700)
    with State(home / "state.db") as st:
        import_nodes(lab.nodes(), state=st)
    env = {**os.environ, "SHOAL_HOME": str(home)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stderr=out)
    http = None
    try:
        deadline = time.monotonic() + 30
        client = None
        while client is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the service did not listen within 30 s"
            client = ServiceClient.locate(home)
            time.sleep(0.05)
        http = httpx.Client(
            transport=httpx.HTTPTransport(uds=client.path),
            base_url="http://shoal",
            headers={PROTOCOL_HEADER: str(PROTOCOL)},
            timeout=60,
        )
        wait_links_up(client, len(lab.nodes()))
        yield client, http, home
    finally:
        if http is not None:
            http.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(log.read_text())  # the service's own lines, shown when a test fails


def wait_links_up(client: ServiceClient, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.status()["nodes"].get("links", {}).get("up") != count:
        assert time.monotonic() < deadline, client.status()["nodes"]
        time.sleep(0.1)


def _node(lab: Any, name: str) -> Any:
    return next(n for n in lab.nodes() if n.name == name)


def test_a_bad_selection_is_400_with_exactly_the_clis_caret(api: Any) -> None:
    client, http, home = api
    answer = http.post("/api/v1/select", json={"expr": "n[1-"})
    assert answer.status_code == 400
    body = answer.json()
    assert body["kind"] == "selection" and body["type"] == "SelectionSyntaxError"
    cli = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "select", "n[1-"],
        env={**os.environ, "SHOAL_HOME": str(home), "SHOAL_NO_SERVICE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2
    assert f"shoal: error: {body['error']}\n{body['pointer']}\n" == cli.stderr
    with pytest.raises(SelectionSyntaxError) as raised:  # shoal.client rebuilds the same error
        client.select("n[1-")
    assert raised.value.pointer() == body["pointer"]
    # the good one is select --json's object, and so is a plan
    assert client.select("n[1-3],n5") == {
        "expression": "n[1-3],n5", "nodeset": "n[1-3,5]", "count": 4,
        "nodes": ["n1", "n2", "n3", "n5"],
    }  # fmt: skip
    assert client.save_plan("pair", "n[1-2]")["expr"] == "n[1-2]"
    assert client.plan("pair") == {
        "plan": "pair", "expr": "n[1-2]", "nodeset": "n[1-2]", "count": 2, "nodes": ["n1", "n2"]
    }  # fmt: skip
    assert [p["plan"] for p in client.plans()] == ["pair"]
    assert http.put("/api/v1/plans/bad", json={"expr": "n[1-"}).status_code == 400
    client.remove_plan("pair")
    assert http.get("/api/v1/plans/pair").status_code == 404


def test_unknown_resources_are_404_and_bad_input_400_usage(api: Any) -> None:
    client, http, _ = api
    for path in (
        "/api/v1/apps/nosuchapp",
        "/api/v1/apps/nosuchapp/spec",
        "/api/v1/apps/nosuchapp/barriers",
        "/api/v1/runs/r000000",
        "/api/v1/pushes/p000000",
        "/api/v1/nodes/zz9",
        "/api/v1/logs/zz9/prog",
    ):
        answer = http.get(path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["type"] == "UnknownNameError" and answer.json()["error"], path
    with pytest.raises(UnknownNameError, match="nosuchapp"):
        client.app("nosuchapp")
    node = client.node("n3")
    assert node["name"] == "n3" and node["link"] == "up"
    for path, body in (
        ("/api/v1/runs", {"selection": "n1"}),  # no command
        ("/api/v1/runs", {"command": "true", "options": {"bogus": 1}}),
        ("/api/v1/copies", {"paths": ["only-one"]}),
        (
            "/api/v1/pushes",
            {"source_dir": "/nonexistent", "remote_dir": "x", "options": {"keep": "x"}},
        ),
        (
            "/api/v1/pushes",
            {"source_dir": "/nonexistent", "remote_dir": "x", "options": {"keep": 0}},
        ),
        ("/api/v1/copies", {"paths": ["a", "@:b"], "options": {"timeout": "soon"}}),
    ):
        answer = http.post(path, json=body)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["kind"] == "usage", answer.text


def test_a_body_over_the_limit_is_413(api: Any) -> None:
    _, http, _ = api
    big = {"expr": "n1," * (1 << 19)}  # 1.5 MiB of JSON
    answer = http.post("/api/v1/select", json=big)
    assert answer.status_code == 413
    assert answer.json()["kind"] == "usage" and "too large" in answer.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"expr": "'
        for _ in range(17):
            yield b"n1," * 21846
        yield b'n1"}'

    answer = http.post(
        "/api/v1/select", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
    assert http.post("/api/v1/select", json={"expr": "n1," * 1000 + "n2"}).json()["count"] == 2


def test_a_run_is_a_resource_followed_to_completion(api: Any, lab: Any) -> None:
    client, http, _ = api
    command = 'sleep $((SHOAL_INDEX % 2 * 2)); echo "$SHOAL_NODE"; exit $((SHOAL_INDEX % 2))'
    answer = http.post("/api/v1/runs", json={"command": command})
    assert answer.status_code == 202
    started = answer.json()
    assert answer.headers["location"] == started["href"] == f"/api/v1/runs/{started['id']}"
    follow = client.results(started["href"], follow=True)
    first = next(follow)  # an even node, while the odd ones still sleep
    assert first["status"] == "ok" and first["index"] % 2 == 0
    assert client.job(started["href"])["state"] == "running"
    rest = list(follow)
    records, last = [first, *rest[:-1]], rest[-1]
    assert len(records) == len(lab.nodes())
    assert {r["node"] for r in records} == {n.name for n in lab.nodes()}
    assert all(r["stdout"] == r["node"] + "\n" for r in records), records
    assert last["summary"]["kinds"]["ok"] == 4 and last["summary"]["kinds"]["failed"] == 4
    done = client.job(started["href"])
    assert done["state"] == "done" and done["summary"] == last["summary"]
    assert sorted(r["node"] for r in done["results"]) == sorted(r["node"] for r in records)
    # reading again gives the same records and summary; start=N skips N
    again = list(client.results(started["href"], start=6))
    assert again == [*records[6:], last]
    # health as the CLI records it, and the run is listed
    assert {f["name"] for f in client.failed()} == {r["node"] for r in records if r["index"] % 2}
    assert started["id"] in {r["id"] for r in http.get("/api/v1/runs").json()}

    # a long run cancelled: the job ends cancelled, the node's command is gone
    marker = unique_lab_name("hcancel")
    long = client.start_run(f"sleep 120; echo {marker}", "n1")
    pattern = f"[{marker[0]}]{marker[1:]}"  # not matching the shell that runs pgrep

    def running() -> bool:
        return bool(remote(_node(lab, "n1"), f"pgrep -f '{pattern}' || true").strip())

    deadline = time.monotonic() + 10
    while not running():
        assert time.monotonic() < deadline, "the long run never started on n1"
        time.sleep(0.2)
    assert client.cancel(long["href"])["cancelling"] is True
    assert list(client.results(long["href"], follow=True)) == [{"cancelled": True}]
    assert client.job(long["href"])["state"] == "cancelled"
    deadline = time.monotonic() + 10
    while running():
        assert time.monotonic() < deadline, "the cancelled run's command still runs"
        time.sleep(0.2)


def test_a_push_with_per_node_progress_then_versions_and_rollback(
    api: Any, lab: Any, tmp_path: Path
) -> None:
    client, http, _ = api
    src = tmp_path / "tree"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    (src / "small.txt").write_text("one\n")
    remote_dir = unique_lab_name("hpush")
    selection = "n[1-4]"
    answer = http.post(
        "/api/v1/pushes",
        json={"source_dir": str(src), "remote_dir": remote_dir, "selection": selection,
              "options": {"rate_limit": 1.5e6}},
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    href = answer.json()["href"]
    lines = list(client.push_progress(href, follow=True))
    snapshots = [x["progress"] for x in lines if "progress" in x]
    results = [x["result"] for x in lines if "result" in x]
    assert "end" in lines[-1] and lines[-1]["end"]["state"] == "done", lines[-1]
    assert lines[-1]["end"]["summary"]["ok"] is True, [x for x in lines if "result" in x]
    assert len(snapshots) >= 3, "progress is pushed while bytes move"
    nodes = {"n1", "n2", "n3", "n4"}
    mid = [s for s in snapshots if 0 < s["received"] < s["needed"]]
    assert mid, "a snapshot taken mid-push"
    assert set(mid[-1]["nodes"]) == nodes
    last = snapshots[-1]["nodes"]
    for name in nodes:
        n = last[name]
        assert n["state"] == "done" and n["received"] >= 3 << 20, n
        assert n["received"] == n["from_source"] + n["from_peers"], n
    assert sum(last[n]["from_peers"] for n in nodes) > 0, "peers served some chunks"
    version = lines[-1]["end"]["summary"]["version"]
    assert {r["node"] for r in results} == nodes
    assert all(r["current"] == version and r["status"] == "ok" for r in results)
    assert client.job(href)["summary"]["ok"] is True

    listed = client.versions(remote_dir, selection)
    assert {r["node"]: r["value"]["current"] for r in listed} == dict.fromkeys(nodes, version)

    (src / "small.txt").write_text("two\n")
    second = client.start_push(str(src), remote_dir, selection)
    end = list(client.push_progress(second["href"], follow=True))[-1]["end"]
    assert end["state"] == "done", end
    newer = end["summary"]["version"]
    assert newer != version
    back = client.rollback(remote_dir, selection)
    assert {
        r["node"]: (r["value"]["previous"], r["value"]["current"]) for r in back
    } == dict.fromkeys(nodes, (newer, version))
    assert remote(_node(lab, "n2"), f"cat {remote_dir}/small.txt") == "one\n"


def _sse_frames(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parsed SSE frames: {"id", "event", "data"} or {"comment"}."""
    frame: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            key, _, value = line.partition(": ")
            if key != "retry":  # the reconnect delay, once at the start
                frame[key] = value


def test_sse_resumes_exactly_with_last_event_id(api: Any) -> None:
    client, http, _ = api
    client.request("POST", "/api/v1/sweep")  # journals one event per node and "swept"
    stored = [e for e in client.events(after=0) if "seq" in e]
    seqs = [e["seq"] for e in stored]
    assert len(seqs) >= 10 and seqs == sorted(seqs)
    cut = seqs[len(seqs) // 2]
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(cut)}
    with http.stream("GET", "/api/v1/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = _sse_frames(response)
        got = []
        for frame in frames:
            if "comment" in frame:  # idle: everything stored was sent
                assert frame["comment"].startswith("heartbeat")
                break
            got.append(int(frame["id"]))
            data = json.loads(frame["data"])
            assert data["seq"] == int(frame["id"]) and frame["event"] == data["topic"]
        journal = [e["seq"] for e in client.events(after=cut) if "seq" in e]
        assert got == journal[: len(got)] and got[: len(seqs) - len(seqs) // 2 - 1] == [
            s for s in seqs if s > cut
        ], "exactly the events after Last-Event-ID, in order, once"
        client.request("POST", "/api/v1/sweep")  # new events while the stream is open
        following = next(f for f in frames if "id" in f)
        assert int(following["id"]) == got[-1] + 1, "the next event stored, nothing skipped"
    # after= in the query wins over the header; a selection keeps its nodes' events only
    query = {"after": str(seqs[0]), "selection": "n2"}
    with http.stream("GET", "/api/v1/events", params=query, headers=headers) as response:
        kept = []
        for frame in _sse_frames(response):
            if "comment" in frame:
                break
            kept.append(json.loads(frame["data"]))
    journal_n2 = [e["seq"] for e in client.events(after=seqs[0], node="n2") if "seq" in e]
    assert len(journal_n2) >= 2 and [e["seq"] for e in kept] == journal_n2
    assert {e["node"] for e in kept} == {"n2"}


def test_a_program_log_is_read_from_offsets_and_followed(api: Any) -> None:
    client, http, _ = api
    name = unique_lab_name("hlog")
    spec = {
        "name": name,
        "command": ["sh", "-c", 'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.2; done'],
    }
    started = list(
        client.stream("POST", "/api/v1/proc/start", body={"selection": "n4", "spec": spec})
    )
    assert started[-1]["summary"]["ok"] is True, started
    try:
        time.sleep(1.0)
        (tail,) = client.log("n4", name, lines=2)
        assert tail["data"].count("\n") == 2 and tail["offset"] > 0
        (whole,) = client.log("n4", name, offset=0)
        assert whole["data"].startswith("line 1\nline 2\n") and whole["offset"] >= tail["offset"]
        pages = client.log("n4", name, offset=whole["offset"], follow=True)
        seen, at = "", whole["offset"]
        for page in pages:  # the log as it grows: each page starts where the last ended
            assert page["offset"] == at + len(page["data"].encode())
            seen += page["data"]
            at = page["offset"]
            if seen.count("\n") >= 5:
                break
        numbers = [int(x.split()[1]) for x in seen.splitlines()]
        last_before = int(whole["data"].splitlines()[-1].split()[1])
        assert numbers == list(range(last_before + 1, last_before + 1 + len(numbers)))
        assert http.get(f"/api/v1/logs/n4/{name}", params={"offset": -1}).status_code == 400
    finally:
        body = {"selection": "n4", "name": name}
        removed = list(client.stream("POST", "/api/v1/proc/remove", body=body))
    assert removed[-1]["summary"]["ok"] is True, removed


def test_a_step_log_is_read_from_offsets_and_followed_while_it_runs(
    api: Any, tmp_path: Path
) -> None:
    client, http, _ = api
    app = unique_lab_name("hstep")
    path = tmp_path / "app.yaml"
    path.write_text(
        f"app: {app}\n"
        "components:\n"
        "  w:\n"
        '    select: "n7"\n'
        "    processes:\n"
        '      - {name: slow, run: "for i in $(seq 10); do echo tick $i; sleep 0.4; done"}\n'
        '      - {name: after, run: "echo finished"}\n'
    )
    step = f"{app}.w.slow"
    with pytest.raises(ShoalError, match=f"no step named '{app}.w.nothing'"):
        list(client.step_log("n7", f"{app}.w.nothing"))
    assert client.request("POST", "/api/v1/apps", body={"spec": str(path)})["accepted"] is True
    try:
        deadline = time.monotonic() + 60
        while True:  # until the agent runs the step (before, it refuses: no such step)
            try:
                (first,) = client.step_log("n7", step, offset=0)
                break
            except ShoalError as exc:
                assert "no step named" in str(exc), exc
                assert time.monotonic() < deadline, "the step did not start within 60 s"
                time.sleep(0.1)
        seen, at = first["data"], first["offset"]
        assert at == len(seen.encode())
        if seen.count("\n") < 10:  # followed as it grows: each page starts where the last ended
            for page in client.step_log("n7", step, offset=at, follow=True):
                assert page["offset"] == at + len(page["data"].encode())
                seen, at = seen + page["data"], page["offset"]
                if seen.count("\n") >= 10:
                    break
        assert seen.splitlines() == [f"tick {i}" for i in range(1, 11)]
        assert first["data"].count("\n") < 10, "followed while running, not read once ended"
        (tail,) = client.step_log("n7", step, lines=2)
        assert tail == {"data": "tick 9\ntick 10\n", "offset": at}
        assert http.get(f"/api/v1/logs/n7/steps/{step}", params={"offset": -1}).status_code == 400
        assert http.get(f"/api/v1/logs/zz9/steps/{step}").status_code == 404
        while not any(  # the application up before it goes down
            a["app"] == app and a["phase"] == "running"
            for a in client.request("GET", "/api/v1/apps")
        ):
            assert time.monotonic() < deadline, client.request("GET", "/api/v1/apps")
            time.sleep(0.2)
        (after,) = client.step_log("n7", f"{app}.w.after")
        assert after["data"] == "finished\n"
    finally:
        assert client.request("POST", f"/api/v1/apps/{app}/down")["nodes"]


def test_an_apps_spec_barriers_and_logs(api: Any, tmp_path: Path) -> None:
    client, http, _ = api
    app = unique_lab_name("happ")
    path = tmp_path / "app.yaml"
    path.write_text(
        f"app: {app}\n"
        "components:\n"
        "  w:\n"
        '    select: "n[5-6]"\n'
        "    count: 2\n"
        "    processes:\n"
        "      - {name: meet, barrier: go}\n"
        '      - {name: passed, run: "echo passed-after-go"}\n'
        "barriers:\n"
        "  go: {threshold: 100%}\n"
    )
    lines = list(client.stream("POST", "/api/v1/apps", body={"spec": str(path), "stream": True}))
    assert "report" in lines[-1], lines
    try:
        spec = client.app_spec(app)
        assert spec["app"] == app and spec["file"] == str(path)
        assert spec["spec"]["components"]["w"]["select"] == "n[5-6]"
        (barrier,) = client.barriers(app)
        assert barrier["barrier"] == "go" and barrier["arrived"] == barrier["needed"] == 2
        assert isinstance(barrier["released"], float)
        logs = client.app_logs(app, lines=5)
        assert set(logs) == {"n5", "n6"}
        assert all("passed-after-go" in text for text in logs.values()), logs
        assert set(client.app_logs(app, node="n6")) == {"n6"}
        assert http.get(f"/api/v1/apps/{app}/logs", params={"lines": -1}).status_code == 400
    finally:
        assert client.request("POST", f"/api/v1/apps/{app}/down")["nodes"]


def test_the_openapi_document_is_served_over_the_socket(api: Any) -> None:
    _, http, _ = api
    answer = http.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/v1/runs", "/api/v1/pushes", "/api/v1/select", "/api/v1/events"} <= set(
        doc["paths"]
    )
    assert http.get("/api/v1/openapi.json", headers={PROTOCOL_HEADER: "0"}).status_code == 400
