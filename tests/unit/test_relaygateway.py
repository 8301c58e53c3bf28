"""Relay gateways' pure parts: the gateway's merge and error wording, the controller's
private agent, the automatic tree (issue 18 item 3)."""

from __future__ import annotations

import ipaddress
import struct

import asyncssh
import pytest
from asyncssh.public_key import decode_ssh_public_key

from shoal.agent import relayrun
from shoal.fanout.relaytree import auto_tree
from shoal.nodes.model import Node
from shoal.transport.gateways import relayed
from shoal.transport.relay import KeyAgent


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_merge_keeps_one_copy_per_distinct_outcome_in_node_order() -> None:
    same = {"exit": 0, "stdout": "aGkK", "stderr": ""}
    pairs = [("n1", same), ("n2", {"exit": 1, "stdout": "", "stderr": ""}), ("n3", dict(same))]
    merged = relayrun.merge(pairs)
    assert merged == [
        {"exit": 0, "stdout": "aGkK", "stderr": "", "nodes": ["n1", "n3"]},
        {"exit": 1, "stdout": "", "stderr": "", "nodes": ["n2"]},
    ]


@pytest.mark.parametrize(
    ("log", "kind", "message"),
    [
        ("ssh: connect to host 10.0.0.5 port 22: Connection refused", "unreachable",
         "connection refused by 10.0.0.5:22"),
        ("ssh: connect to host 10.0.0.5 port 22: No route to host", "unreachable",
         "no route to host 10.0.0.5:22"),
        ("ssh: connect to host 10.0.0.5 port 22: Connection timed out", "unreachable",
         "connect timed out after 3s"),
        ("No ED25519 host key is known for 10.0.0.5 and you have requested strict checking.\n"
         "Host key verification failed.", "hostkey", "host key not in known_hosts; refusing"),
        ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification "
         "failed.", "hostkey", "HOST KEY CHANGED"),
        ("root@10.0.0.5: Permission denied (publickey).", "auth", "auth failed for root@10.0.0.5"),
    ],
)  # fmt: skip
def test_client_failures_in_the_controllers_words(log: str, kind: str, message: str) -> None:
    node = {"host": "10.0.0.5", "port": 22, "user": "root"}
    got = relayrun.classify(log, node, 3.0)
    assert got is not None
    assert got[0] == kind and got[1].startswith(message), got


def test_exit_255_without_a_client_message_is_the_commands() -> None:
    assert relayrun.classify("\n", {"host": "h", "port": 22, "user": "u"}, 3) is None


def test_the_gateways_client_checks_strictly_with_the_controllers_entries_only() -> None:
    node = {"host": "10.0.0.5", "port": 2222, "user": "root", "line": "echo hi"}
    argv = relayrun.ssh_argv(node, "/tmp/kh", "/tmp/log", {"connect_timeout": 2.5})
    joined = " ".join(argv)
    for opt in ("-F /dev/null", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/tmp/kh",
                "GlobalKnownHostsFile=/dev/null", "BatchMode=yes"):  # fmt: skip
        assert opt in joined, opt
    assert "-a" in argv  # the forwarded agent goes no further than the gateway
    assert argv[-3:] == ["10.0.0.5", "--", "echo hi"]
    assert argv[argv.index("-p") + 1] == "2222"
    assert "accept-new" not in joined


def test_each_client_is_its_connections_master_and_the_stop_goes_over_it() -> None:
    node = {"host": "10.0.0.5", "port": 22, "user": "root", "line": "sleep 9", "stop": "end it"}
    argv = relayrun.ssh_argv(node, "/tmp/kh", "/tmp/log", {"connect_timeout": 2}, "/tmp/w/cm-3")
    assert "ControlMaster=yes" in argv and "ControlPath=/tmp/w/cm-3" in argv
    assert "ControlPath=none" not in argv and argv[-1] == "sleep 9"
    stop = relayrun.stop_argv(node, "/tmp/kh", "/tmp/log", "/tmp/w/cm-3")
    assert "ControlMaster=no" in stop and "ControlPath=/tmp/w/cm-3" in stop
    assert "StrictHostKeyChecking=yes" in stop and "BatchMode=yes" in stop  # never a prompt
    assert stop[-3:] == ["10.0.0.5", "--", "end it"]
    without = relayrun.ssh_argv(node, "/tmp/kh", "/tmp/log", {"connect_timeout": 2})
    assert "ControlPath=none" in without and "ControlMaster=yes" not in without


def _pair() -> asyncssh.SSHKeyPair:
    return asyncssh.load_keypairs([asyncssh.generate_private_key("ssh-ed25519")])[0]


def _bind(host: asyncssh.SSHKeyPair, session: bytes, forwarding: bool = False) -> bytes:
    """An OpenSSH client's session-bind@openssh.com, signed by ``host``."""
    return (bytes([27]) + _string(b"session-bind@openssh.com") + _string(host.public_data)
            + _string(session) + _string(host.sign(session)) + bytes([forwarding]))  # fmt: skip


def test_key_agent_signs_only_bound_sessions_once_per_node() -> None:
    user, host, stranger = _pair(), _pair(), _pair()
    agent = KeyAgent([user], signs=2, host_keys=[host.public_data])
    try:
        ids = agent.answer(bytes([11]))
        assert ids[0] == 12 and struct.unpack_from(">I", ids, 1) == (1,)
        assert _string(user.public_data) in ids
        session = b"s" * 32
        data = _string(session) + b"\x32rest of a userauth request"
        request = bytes([13]) + _string(user.public_data) + _string(data) + b"\0" * 4
        assert agent.answer(request) == bytes([5])  # no session bound yet
        assert agent.answer(_bind(stranger, session)) == bytes([5])  # not a subtree host
        assert agent.answer(_bind(host, session, forwarding=True)) == bytes([5])
        forged = _bind(host, session)[:-9] + b"x" * 8 + b"\0"  # signature broken
        assert agent.answer(forged) == bytes([5])
        assert agent.answer(_bind(host, session)) == bytes([6])
        for _ in range(2):
            reply = agent.answer(request)
            assert reply[0] == 14
            (n,) = struct.unpack_from(">I", reply, 1)
            assert decode_ssh_public_key(user.public_data).verify(data, reply[5 : 5 + n])
        assert agent.answer(request) == bytes([5])  # the budget is spent
        fresh = KeyAgent([user], signs=5, host_keys=[host.public_data])
        assert fresh.answer(_bind(host, session)) == bytes([6])
        bad = bytes([13]) + _string(stranger.public_data) + _string(data) + b"\0" * 4
        assert fresh.answer(bad) == bytes([5])  # a key it does not hold
        other = _string(b"t" * 32) + b"\x32..."
        unbound = bytes([13]) + _string(user.public_data) + _string(other) + b"\0" * 4
        assert fresh.answer(unbound) == bytes([5])  # another session
        assert fresh.answer(bytes([13, 0, 0])) == bytes([5])  # malformed
        assert fresh.answer(bytes([17])) == bytes([5])  # anything else (add key, ...)
        fresh._dir.cleanup()
    finally:
        agent._dir.cleanup()


def _nodes(n: int) -> list[Node]:
    base = ipaddress.ip_address("10.9.0.2")
    return [Node(name=f"n{i + 1}", host=str(base + (n - i))) for i in range(n)]  # reversed


def test_auto_tree_sqrt_n_gateways_deterministic() -> None:
    nodes = _nodes(100)
    tree = auto_tree(nodes, min_size=64)
    assert [n.name for n in tree] == [n.name for n in nodes]  # order kept
    gateways = {n.gateway for n in tree if n.gateway}
    assert len(gateways) == 10
    assert all(relayed(n) for n in tree if n.gateway)
    assert not any(n.gateway for n in tree if n.name in gateways)
    # each subtree: consecutive addresses after its gateway's
    by = {n.name: n for n in tree}
    for n in tree:
        if n.gateway:
            gw = by[n.gateway]
            assert 0 < int(ipaddress.ip_address(n.host)) - int(ipaddress.ip_address(gw.host)) < 10
    assert auto_tree(nodes, min_size=64) == tree


def test_auto_tree_off_below_the_size_or_with_gateways_marked() -> None:
    nodes = _nodes(20)
    assert auto_tree(nodes, min_size=64) == nodes
    assert auto_tree(nodes, min_size=0) == nodes
    marked = [Node(name="x", host="10.0.0.1", attrs={"gateway": "n1"}), *nodes]
    assert auto_tree(marked, min_size=2) == marked


def test_the_gateways_client_takes_only_the_algorithm_lists_it_is_sent() -> None:
    algs = {"KexAlgorithms": "curve25519-sha256", "Ciphers": "^aes128-gcm@openssh.com",
            "ProxyCommand": "sh -c evil", "MACs": "hmac-sha2-256 -oProxyCommand=x"}  # fmt: skip
    node = {"algorithms": algs}
    assert relayrun.algorithms(node) == [
        "-o", "Ciphers=^aes128-gcm@openssh.com", "-o", "KexAlgorithms=curve25519-sha256",
    ]  # fmt: skip


def test_a_relay_record_longer_than_its_limit_is_refused() -> None:
    import asyncio

    from shoal.transport.relay import _RecordReader

    async def lines(pieces: list[bytes], longest: int) -> list[bytes]:
        reader = asyncio.StreamReader()
        for piece in pieces:
            reader.feed_data(piece)
        reader.feed_eof()
        records = _RecordReader(reader, longest)  # type: ignore[arg-type]
        got = []
        while line := await records.next():
            got.append(line)
        return got

    both = [b'{"a": 1}\n{"b"', b": 2}\n"]
    assert asyncio.run(lines(both, 100)) == [b'{"a": 1}\n', b'{"b": 2}\n']
    many = [b"x\n" * 5000]
    assert asyncio.run(lines(many, 100)) == [b"x\n"] * 5000
    long = [b"x" * 70_000, b"x" * 130_000 + b"\n"]
    assert asyncio.run(lines(long, 0)) == [b"x" * 200_000 + b"\n"]
    with pytest.raises(ValueError, match="longer than 100,000 bytes"):
        asyncio.run(lines(long, 100_000))
    with pytest.raises(ValueError, match="longer than"):  # never ends: refused, not held
        asyncio.run(lines([b"x" * 300_000], 100_000))
