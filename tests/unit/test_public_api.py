"""The curated public API of ``shoal``: exactly these names, each loaded lazily.

Changing the public surface is a decision: it changes :data:`PUBLIC` here too.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import shoal
import shoal.errors

PUBLIC = [
    "AcquireError",
    "AgentError",
    "AgentLinkBroken",
    "AgentNotInstalled",
    "AgentNotRunning",
    "AgentOptions",
    "AgentTimeout",
    "AppAborted",
    "AppError",
    "AppSpec",
    "AppStatus",
    "AuthError",
    "ChunkFetchError",
    "CommandOutcome",
    "CommandOutput",
    "CommandTimeout",
    "ConfigError",
    "ConnectError",
    "ContentError",
    "DownReport",
    "EmptySelectionError",
    "FanoutOptions",
    "HostKeyError",
    "InventoryError",
    "LabError",
    "LocalError",
    "MemberFailed",
    "Node",
    "NodeOutcome",
    "NodePush",
    "NodeSet",
    "NodeSetParseError",
    "OperationError",
    "PlanCycleError",
    "PushOptions",
    "PushResult",
    "RequestError",
    "Results",
    "RunOptions",
    "SelectionError",
    "SelectionSyntaxError",
    "ServiceError",
    "ShoalError",
    "StateError",
    "TransportError",
    "UnknownNameError",
    "UpOptions",
    "UpReport",
    "UsageError",
    "VersionMismatch",
    "__version__",
    "app_down_async",
    "app_status_async",
    "app_up",
    "app_up_async",
    "copy",
    "copy_async",
    "load_app",
    "push",
    "push_async",
    "resolve",
    "run",
    "run_async",
    "select",
]

#: Homes whose names must load without asyncio: the CLI's start-up path (DESIGN.md,
#: "TCP connects start before asyncssh is imported") and plain error handling.
ASYNCIO_FREE = {"shoal.errors", "shoal.nodes.model", "shoal.nodes.nodeset", "shoal.fanout.options"}


def _python(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _layers() -> ModuleType:
    """tests/unit/test_layers.py, whose LAYERS is the contract."""
    spec = importlib.util.spec_from_file_location(
        "layers", Path(__file__).with_name("test_layers.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_exported_names_are_exactly_these() -> None:
    assert shoal.__all__ == PUBLIC  # sorted, as written
    assert set(PUBLIC) <= set(dir(shoal))


def test_every_name_resolves_to_what_its_home_defines() -> None:
    for name in PUBLIC:
        value = getattr(shoal, name)
        if name == "__version__":
            continue
        module, _, attribute = shoal._HOMES[name].partition(":")
        assert value is getattr(importlib.import_module(module), attribute or name), name


def test_every_error_of_the_tree_is_exported() -> None:
    tree = {
        name
        for name, value in vars(shoal.errors).items()
        if isinstance(value, type) and issubclass(value, shoal.errors.ShoalError)
    }
    assert tree <= set(PUBLIC), sorted(tree - set(PUBLIC))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        shoal.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("shoal.no_such_name resolved")


def test_import_shoal_imports_nothing_else() -> None:
    loaded = _python(
        "import json, sys; import shoal; "
        "print(json.dumps({'mods': sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('shoal', 'asyncio', 'asyncssh'))}))"
    )
    assert loaded["mods"] == ["shoal", "shoal.lazyexports"]


def test_resolving_a_name_loads_only_its_layer_and_below() -> None:
    """Each home module, resolved alone in a fresh interpreter, pulls in no module of a
    higher layer (never an adapter, the lab or the test doubles), and the start-up and
    error names no asyncio."""
    layers = _layers()
    homes: dict[str, list[str]] = {}
    for name in PUBLIC:
        if name != "__version__":
            homes.setdefault(shoal._HOMES[name].partition(":")[0], []).append(name)
    for module, names in sorted(homes.items()):
        loaded = _python(
            "import json, sys; import shoal; "
            + "".join(f"shoal.{name}; " for name in names)
            + "print(json.dumps({'mods': sorted(sys.modules), "
            "'asyncio': 'asyncio' in sys.modules}))"
        )
        mods = [m for m in loaded["mods"] if m.split(".")[0] == "shoal"]  # type: ignore[union-attr]
        own = layers._layer_of(module)
        above = [m for m in mods if layers._layer_of(m) > own]
        assert not above, f"shoal.{names[0]} ({module}) loads {above}"
        if module in ASYNCIO_FREE:
            assert loaded["asyncio"] is False, f"shoal.{names[0]} ({module}) imports asyncio"
