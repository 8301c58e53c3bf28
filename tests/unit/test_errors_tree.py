"""The one exception tree: every controller error is in errors.py and its docstring.

Every module of src/shoal except the node agent (``shoal.agent`` imports nothing of
the controller's, so it keeps its own stdlib exceptions) is imported; an exception
class defined anywhere but :mod:`shoal.errors` fails the test, as does a class of
errors.py missing from the docstring's tree or drawn under the wrong parent.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import shoal
from shoal import errors
from shoal.errors import (
    AgentError,
    AgentLinkBroken,
    AgentTimeout,
    AuthError,
    ChunkFetchError,
    ConnectError,
    ContentError,
    HostKeyError,
    ShoalError,
    TransportError,
)

#: Exceptions the controller defines outside errors.py on purpose, with the reason.
OUTSIDE = {
    # a PyYAML error, so every yaml.YAMLError handler sees it; both callers
    # (app/located.py, nodes/importers.py) translate it to ConfigError/InventoryError
    "shoal.yamlload.LimitError",
}

#: Exactly these say "try again": a link that could not be made or broke.
RETRYABLE = {ConnectError, AgentLinkBroken, AgentTimeout, ChunkFetchError}


def _controller_modules() -> list[str]:
    names = ["shoal"]
    for info in pkgutil.walk_packages(shoal.__path__, "shoal."):
        if info.name == "shoal.agent" or info.name.startswith("shoal.agent."):
            continue
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def _tree_classes() -> list[type[ShoalError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, ShoalError) and cls.__module__ == errors.__name__
    ]


def _drawn_tree() -> dict[str, str | None]:
    """name -> parent name, as the module docstring draws the tree."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "ShoalError":
            parents["ShoalError"] = None
            stack = ["ShoalError"]
            continue
        m = re.match(r"^(\s*(?:[│ ]   )*)[├└]── (\w+)", line)
        if not m or not stack:
            continue
        depth = (len(m.group(1)) - 4) // 4 + 1  # children of ShoalError have depth 1
        del stack[depth:]
        parents[m.group(2)] = stack[-1]
        stack.append(m.group(2))
    return parents


def test_every_controller_exception_is_in_errors_py() -> None:
    outside = []
    for name in _controller_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == name
                and name != errors.__name__
                and f"{name}.{attr}" not in OUTSIDE
            ):
                outside.append(f"{name}.{attr}")
    assert not outside, "exceptions defined outside shoal/errors.py: " + ", ".join(outside)


def test_every_shoal_error_is_drawn_in_the_docstring_under_its_parent() -> None:
    drawn = _drawn_tree()
    classes = _tree_classes()
    assert {c.__name__ for c in classes} == set(drawn)
    for cls in classes:
        if cls is ShoalError:
            continue
        assert drawn[cls.__name__] == cls.__bases__[0].__name__, cls


def test_kinds_are_unique_where_a_class_sets_one() -> None:
    own = {cls.__name__: cls.__dict__["kind"] for cls in _tree_classes() if "kind" in cls.__dict__}
    seen: dict[str, str] = {}
    for name, kind in own.items():
        assert kind not in seen, f"{name} and {seen[kind]} share kind {kind!r}"
        seen[kind] = name
    # a class without its own kind reports its parent's (AgentNotRunning is "agent")
    assert errors.AgentNotRunning("x").kind == "agent"
    assert errors.NodeSetParseError("x", 0).kind == "selection"


@pytest.mark.parametrize("cls", _tree_classes(), ids=lambda c: c.__name__)
def test_retryable_per_class(cls: type[ShoalError]) -> None:
    assert isinstance(cls.retryable, bool)
    assert cls.retryable is (cls in RETRYABLE)


def test_refusals_are_never_retryable() -> None:
    for cls in (HostKeyError, AuthError, TransportError, AgentError, ContentError):
        assert not cls.retryable, cls
    assert issubclass(ConnectError, TransportError) and ConnectError.retryable


def test_push_retries_broken_links_but_not_unreachable_nodes_or_refusals() -> None:
    from shoal.content.push import NodePush, _retryable

    def outcome(error: ShoalError | None) -> NodePush:
        return NodePush("n1", error=error)

    assert _retryable(outcome(AgentLinkBroken("n1: connection to the agent broke: EOF")))
    assert _retryable(outcome(ChunkFetchError("n1: cannot fetch chunks (last from n2: x)")))
    assert _retryable(outcome(AgentTimeout("agent did not answer hello within 60s", node="n1")))
    # the scheduler already retried the connection (--retries)
    assert not _retryable(outcome(ConnectError("connection refused", "n1")))
    assert not _retryable(outcome(AuthError("permission denied", "n1")))
    # a message that merely mentions a connection decides nothing
    assert not _retryable(outcome(ContentError("n1: cannot learn addresses from $SSH_CONNECTION")))
    assert not _retryable(outcome(AgentError("connection-7: refused")))
    assert not _retryable(outcome(None))
    assert not _retryable(None)


def test_a_node_whose_install_went_silent_gets_a_new_round(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """push_async's rounds, with the install and the swarm replaced: a node whose agent did
    not answer the install's hello (30 % loss) is installed and pushed again; a refusal is
    reported and never tried twice."""
    import asyncio

    from shoal.fanout.results import NodeOutcome, Results
    from shoal.nodes.model import Node
    from shoal.state import State

    pushmod = importlib.import_module("shoal.content.push")  # the package exports push()
    installs: list[list[str]] = []
    swarms: list[list[str]] = []
    silent_once = {"n2"}

    async def install(nodes, opts, transport=None, state=None):  # type: ignore[no-untyped-def]
        installs.append([n.name for n in nodes])
        out: dict[str, NodeOutcome[str]] = {}
        for n in nodes:
            if n.name in silent_once:
                silent_once.discard(n.name)
                err: ShoalError = AgentTimeout("agent did not answer hello within 60s", n.name)
                out[n.name] = NodeOutcome(n.name, error=err)
            elif n.name == "n3":
                out[n.name] = NodeOutcome(n.name, error=AuthError("permission denied", n.name))
            else:
                out[n.name] = NodeOutcome(n.name, value="installed")
        return Results(out, 0.0)

    async def swarm(nodes, tree, remote_dir, opts, transport, st, on_progress, result):  # type: ignore[no-untyped-def]
        swarms.append([n.name for n in nodes])
        for n in nodes:
            result.results[n.name] = pushmod.NodePush(n.name, value=tree.version)

    monkeypatch.setattr(pushmod, "install_async", install)
    monkeypatch.setattr(pushmod, "_swarm_push", swarm)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    nodes = [Node(name=f"n{i}", host=f"h{i}") for i in (1, 2, 3)]
    with State(tmp_path / "state.db") as st:
        result = asyncio.run(pushmod.push_async(nodes, src, "d", state=st))
    assert installs == [["n1", "n2", "n3"], ["n2"]]
    assert swarms == [["n1"], ["n2"]]
    assert result["n1"].ok and result["n2"].ok
    assert isinstance(result["n3"].error, AuthError)
