"""XML-RPC at /RPC2 and Prometheus metrics at /metrics of a real `shoal serve` on the lab.

The XML-RPC client is the stdlib's ``xmlrpc.client.ServerProxy`` over the
service's Unix socket (a small Transport subclass); the metrics are parsed
with ``prometheus_client.parser`` and checked against what the lab does."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoal.client import ServiceClient
from shoal.errors import ShoalError
from shoal.nodes.inventory import import_nodes
from shoal.service.xmlrpc import FAULT_CODES
from shoal.state import State

from .conftest import remote, unique_lab_name

pytestmark = pytest.mark.lab

SERVE = (
    "import os, pathlib; from shoal.control.controller import ServiceConfig; "
    "from shoal.service.servedaemon import serve; "
    "serve(ServiceConfig(pathlib.Path(os.environ['SHOAL_HOME'])))"
)
NODES = 4


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class UnixTransport(xmlrpc.client.Transport):
    """ServerProxy's transport over the service's Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return UnixConnection(self.path)


def proxy(home: Path) -> xmlrpc.client.ServerProxy:
    sock = str(home / "serve.sock")
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=UnixTransport(sock))


def raw(home: Path, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = UnixConnection(str(home / "serve.sock"))
    try:
        conn.request(method, target, body=body, headers={"Content-Type": "text/xml"})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def scrape(home: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = raw(home, "GET", "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.2)


@pytest.fixture
def service(lab: Any, tmp_path: Path) -> Iterator[tuple[ServiceClient, Path, list[Any]]]:
    """A service over its own state holding NODES lab nodes, all linked; always stopped."""
    home = tmp_path / "svc"
    home.mkdir(mode=0o700)
    nodes = lab.nodes()[:NODES]
    with State(home / "state.db") as st:
        import_nodes(nodes, state=st)
    env = {**os.environ, "SHOAL_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        client = None
        while client is None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the service did not listen within 30 s"
            client = ServiceClient.locate(home)
            time.sleep(0.05)
        until(lambda: client.status()["nodes"]["links"].get("up") == NODES, 60, "links up")
        yield client, home, nodes
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_xmlrpc_answers_what_the_http_api_answers(service: Any) -> None:
    client, home, nodes = service
    rpc = proxy(home)
    names = rpc.system.listMethods()
    for name in ("nodes.list", "nodes.failed", "apps.list", "apps.status", "apps.up",
                 "apps.down", "runs.start", "runs.get", "proc.status", "proc.start",
                 "proc.stop", "proc.restart", "system.methodHelp"):  # fmt: skip
        assert name in names
    assert "SELECTION" in rpc.system.methodHelp("runs.run")
    assert ["struct", "string"] in rpc.system.methodSignature("runs.get")

    listed = rpc.nodes.list()
    served = client.request("GET", "/api/v1/nodes")
    assert [(n["name"], n["link"]) for n in listed] == [(n["name"], n["link"]) for n in served]
    assert {n["link"] for n in listed} == {"up"}
    assert rpc.nodes.failed() == client.request("GET", "/api/v1/nodes/failed") == []
    assert rpc.apps.list() == []

    ran = rpc.runs.run("", "echo hi-$((6*7))")
    assert ran["summary"]["ok"] is True and ran["summary"]["nodes"] == NODES
    assert sorted(r["node"] for r in ran["nodes"]) == sorted(n.name for n in nodes)
    assert {r["stdout"] for r in ran["nodes"]} == {"hi-42\n"}

    started = rpc.runs.start(nodes[0].name, "echo later")
    assert set(started) >= {"id", "href"}
    done = until(
        lambda: (r := rpc.runs.get(started["id"]))["state"] != "running" and r, 30, "the run"
    )
    assert done["state"] == "done" and done["results"][0]["stdout"] == "later\n"


def test_xmlrpc_faults_carry_the_cli_kinds_and_hostile_bodies_are_refused(service: Any) -> None:
    client, home, _nodes = service
    rpc = proxy(home)
    with pytest.raises(xmlrpc.client.Fault) as bad:
        rpc.nodes.list("web[")
    assert bad.value.faultCode == 6 and bad.value.faultString.startswith("selection: ")
    with pytest.raises(xmlrpc.client.Fault) as unknown:
        rpc.apps.status("no-such-app")
    with pytest.raises(ShoalError) as over_http:
        client.request("GET", "/api/v1/apps/no-such-app")
    kind = over_http.value.kind  # the HTTP API's kind, the fault's too
    assert unknown.value.faultString == f"{kind}: {over_http.value}"
    assert unknown.value.faultCode == FAULT_CODES[kind]
    with pytest.raises(xmlrpc.client.Fault) as missing:
        rpc.no.such.method()
    assert missing.value.faultCode == -32601
    with pytest.raises(xmlrpc.client.Fault) as params:
        rpc.nodes.list(1, 2)
    assert params.value.faultCode == -32602

    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
        )
        + b"]><methodCall><methodName>&j;</methodName></methodCall>"
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<methodCall><methodName>&x;</methodName></methodCall>"
    )
    harmless_dtd = (  # xmlrpc.client.loads would call nodes.list: any DTD is refused
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY n "nodes.list">]>'
        b"<methodCall><methodName>&n;</methodName></methodCall>"
    )
    for hostile in (harmless_dtd, laughs, external, b"<methodCall><methodName>x", b"\x00junk"):
        status, body = raw(home, "POST", "/RPC2", hostile)
        assert status == 200
        with pytest.raises(xmlrpc.client.Fault) as refused:
            xmlrpc.client.loads(body)
        assert refused.value.faultCode == -32700, body
        assert b"root:" not in body
    status, _ = raw(home, "POST", "/RPC2", b"<methodCall>" + b" " * (2 << 20))
    assert status == 413
    assert rpc.service.status()["protocol"] == 1  # still serving


def running_now(client: ServiceClient, home: Path) -> float:
    """Programs RUNNING in the metrics once every node's agent has reported its programs
    (the first beat carries them with the live facts, one interval after the watch starts;
    this service's state holds no gathered facts, so load1 comes from that beat): what
    earlier tests left running on the session's lab nodes, the base a test counts from."""
    until(lambda: all("load1" in n["facts"] for n in client.nodes()), 30, "programs reported")
    return float(scrape(home).get(("shoal_programs", (("state", "RUNNING"),)), 0))


def test_metrics_follow_links_programs_and_events(service: Any, lab: Any) -> None:
    client, home, nodes = service
    rpc = proxy(home)
    base = running_now(client, home)
    first = scrape(home)
    assert first[("shoal_nodes", (("state", "up"),))] == NODES
    assert first[("shoal_nodes", (("state", "down"),))] == 0
    assert first[("shoal_link_attaches_total", ())] >= NODES
    assert first[("shoal_heartbeat_rtt_seconds_gcount", ())] == NODES
    assert first[("shoal_events_total", (("topic", "service"),))] >= 1

    running = ("shoal_programs", (("state", "RUNNING"),))
    spec = {"name": "metered", "command": ["sleep", "600"]}
    started = rpc.proc.start("", spec)
    assert started["summary"]["ok"] is True
    until(
        lambda: scrape(home).get(running) == base + NODES,
        15,
        f"{base:g} + 4 programs RUNNING in the metrics",
    )
    assert rpc.proc.restart(nodes[0].name, "metered")["summary"]["ok"] is True
    key = ("shoal_program_restarts_total", (("node", nodes[0].name), ("program", "metered")))
    until(lambda: scrape(home).get(key) == 1, 15, "the restart counted")
    assert rpc.proc.stop("", "metered")["summary"]["ok"] is True

    victim = nodes[-1]
    before = scrape(home).get(("shoal_events_total", (("topic", "node"),)), 0)
    lab.kill(victim.name)
    try:
        seen = until(
            lambda: (m := scrape(home))[("shoal_nodes", (("state", "down"),))] == 1 and m,
            15,
            "nodes{state=down} 1",
        )
        assert seen[("shoal_nodes", (("state", "up"),))] == NODES - 1
        assert seen[("shoal_failed_nodes", ())] == 1
        assert seen[("shoal_events_total", (("topic", "node"),))] > before
        assert [n["name"] for n in rpc.nodes.failed()] == [victim.name]
    finally:
        lab.revive(victim.name)
    back = until(
        lambda: (m := scrape(home))[("shoal_nodes", (("state", "up"),))] == NODES and m,
        60,
        "the node up again",
    )
    assert back[("shoal_link_reconnects_total", ())] >= 1
    assert back[("shoal_failed_nodes", ())] == 0


#: Drops program ``ghost`` from the agent's desired state, then kills the agent (-9): the
#: next agent reaps the process left behind (no event says so) and does not start it again.
FORGET_GHOST = (
    "cd .shoal && python3 -c \"import json; d = json.load(open('programs.json')); "
    "d['programs'].pop('ghost'); json.dump(d, open('programs.json', 'w'))\" "
    "&& kill -9 $(cat agent.pid)"
)


def test_programs_in_the_metrics_are_what_the_agents_hold_not_a_replay_of_events(
    service: Any,
) -> None:
    """A program reaped with no event about it leaves shoal_programs: the metric counts what
    each agent's supervisor holds (its beats say so), not the last lifecycle event seen."""
    client, home, nodes = service
    rpc = proxy(home)
    node = nodes[0]
    running = ("shoal_programs", (("state", "RUNNING"),))
    base = running_now(client, home)
    spec = {"name": "ghost", "command": ["sleep", "6017"]}
    assert rpc.proc.start(node.name, spec)["summary"]["ok"] is True
    try:
        until(lambda: scrape(home).get(running) == base + 1, 15, "ghost RUNNING")
        with_ghost = base + 1
        remote(node, FORGET_GHOST)
        until(
            lambda: scrape(home).get(running) == with_ghost - 1,
            20,
            f"RUNNING {with_ghost - 1} once the agent is back without ghost",
        )
        assert remote(node, "pgrep -f 'sleep 601[7]' || true").strip() == ""  # reaped indeed
    finally:
        with contextlib.suppress(xmlrpc.client.Fault):
            rpc.proc.stop(node.name, "ghost")


SERVE_TCP = (
    "import os, pathlib; from shoal.control.controller import ServiceConfig; "
    "from shoal.service.servedaemon import serve; "
    "serve(ServiceConfig(pathlib.Path(os.environ['SHOAL_HOME'])), "
    "on_ready=lambda path, urls: print(urls[0], flush=True), listen=[('127.0.0.1', 0)])"
)


@pytest.fixture
def tcp_service(lab: Any, tmp_path: Path) -> Iterator[tuple[str, Path, list[Any]]]:
    """A service with two lab nodes, also listening on a free loopback port; always stopped."""
    home = tmp_path / "svc"
    home.mkdir(mode=0o700)
    nodes = lab.nodes()[:2]
    with State(home / "state.db") as st:
        import_nodes(nodes, state=st)
    env = {**os.environ, "SHOAL_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_TCP], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        client = ServiceClient.locate(home)
        assert client is not None
        until(lambda: client.status()["nodes"]["links"].get("up") == 2, 60, "links up")
        yield url, home, nodes
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_xmlrpc_and_metrics_over_tcp_need_a_token_and_a_read_token_cannot_act(
    tcp_service: Any,
) -> None:
    from shoal.service.access import TokenStore

    url, home, nodes = tcp_service
    store = TokenStore(home)
    admin, read = store.token("admin"), store.token("read")

    def over_tcp(token: str | None) -> xmlrpc.client.ServerProxy:
        headers = [("Authorization", f"Bearer {token}")] if token else []
        return xmlrpc.client.ServerProxy(f"{url}/RPC2", headers=headers)

    for token in (None, "not-the-token"):
        with pytest.raises(xmlrpc.client.ProtocolError) as refused:
            over_tcp(token).nodes.list()
        assert refused.value.errcode == 401

    ran = over_tcp(admin).runs.run("", "echo tcp")
    assert ran["summary"]["ok"] is True and {r["stdout"] for r in ran["nodes"]} == {"tcp\n"}

    reader = over_tcp(read)
    assert sorted(n["name"] for n in reader.nodes.list()) == sorted(n.name for n in nodes)
    for name, params in (("runs.run", ("", "touch /tmp/should-not")), ("apps.down", ("x",)),
                         ("proc.stop", ("", "x")), ("service.stop", ())):  # fmt: skip
        with pytest.raises(xmlrpc.client.Fault) as forbidden:
            getattr(reader, name)(*params)
        assert forbidden.value.faultCode == 403, name

    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{url}/metrics", timeout=10)
    assert anonymous.value.code == 401
    scraped = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {read}"})
    with urllib.request.urlopen(scraped, timeout=10) as answer:
        text = answer.read().decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"shoal_nodes", "shoal_events", "shoal_heartbeat_rtt_seconds"} <= families
    assert over_tcp(admin).service.status()["protocol"] == 1  # still serving: stop refused


def test_an_app_brought_up_and_down_over_xmlrpc_is_kept_and_counted(
    service: Any, tmp_path: Path
) -> None:
    client, home, nodes = service
    rpc = proxy(home)
    marker = f"sleep 6{os.getpid() % 1000:03d}1"
    spec = tmp_path / "rpcapp.yaml"
    spec.write_text(
        "app: rpcapp\ncomponents:\n  w:\n"
        f'    select: "{nodes[0].name},{nodes[1].name}"\n    count: 2\n'
        f'    processes:\n      - {{name: svc, service: "exec {marker}"}}\n'
    )
    running_metric = ("shoal_programs", (("state", "RUNNING"),))
    base = running_now(client, home)
    accepted = rpc.apps.up(str(spec))
    assert accepted["app"] == "rpcapp"
    try:

        def running() -> Any:
            status = rpc.apps.status("rpcapp")
            members = [n for n in status["nodes"] if n["state"] == "active"]
            ok = len(members) == 2 and all(
                n["programs"] and all(p["state"] == "RUNNING" for p in n["programs"])
                for n in members
            )
            return ok and status

        status = until(running, 90, "both members RUNNING")
        assert status == client.request("GET", "/api/v1/apps/rpcapp") | {
            "nodes": status["nodes"]
        }  # the same answer (programs' uptimes aside)
        assert [a["app"] for a in rpc.apps.list()] == ["rpcapp"]
        until(
            lambda: scrape(home).get(running_metric, 0) == base + 2,
            15,
            "the members' programs RUNNING in the metrics",
        )
    finally:
        down = rpc.apps.down("rpcapp")
    assert sorted(down["nodes"]) == sorted([nodes[0].name, nodes[1].name])
    until(
        lambda: scrape(home).get(running_metric) == base,
        15,
        "no program of the app RUNNING after down",
    )


def test_a_push_over_xmlrpc_counts_its_bytes_by_source_and_peers(
    service: Any, tmp_path: Path
) -> None:
    _client, home, nodes = service
    rpc = proxy(home)
    src = tmp_path / "tree"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    remote_dir = unique_lab_name("xpush")
    started = rpc.pushes.start(str(src), remote_dir, "", {"rate_limit": 1.5e6})
    done = until(
        lambda: (p := rpc.pushes.get(started["id"]))["state"] != "running" and p, 90, "the push"
    )
    assert done["state"] == "done", done["error"]
    records = {r["node"]: r for r in done["results"]}
    assert set(records) == {n.name for n in nodes}
    metrics = scrape(home)
    for name, record in records.items():
        for via in ("source", "peers"):
            key = ("shoal_push_bytes_total", (("node", name), ("via", via)))
            assert metrics[key] == record[f"from_{via}"], (name, via)
        assert record["from_source"] + record["from_peers"] >= 3 << 20
    versions = rpc.content.versions(remote_dir, "")
    assert {v["node"]: v["value"]["current"] for v in versions} == dict.fromkeys(
        records, done["summary"]["version"]
    )
