"""Imports in src/shoal go one way: a module imports its own layer or a lower one.

The contract is :data:`LAYERS`, bottom to top. Every module of the package is
parsed with :mod:`ast` (nothing is imported), and each ``shoal.*`` import it
makes, at module level or inside a function, is resolved to the module it
names; the test fails listing every import that reaches up a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shoal

ROOT = Path(shoal.__file__).parent

# Bottom to top. Each entry is one layer: the top-level names (packages or
# modules of ``shoal``) that belong to it. A layer may import itself and any
# layer listed before it, never one listed after it.
LAYERS: list[tuple[str, ...]] = [
    # shared leaves: the error tree, parsing helpers, paths, the SQLite state, lazy names
    ("errors", "numeric", "yamlload", "paths", "state", "lazyexports", "settings", "logsetup"),
    # the node side, shipped as one zipapp: standard library and shoal.agent only
    ("agent",),
    # the node model, node sets, selection, inventory, plans, health, fact parsing
    ("nodes",),
    # SSH / local / mock connections (asyncssh stays in here)
    ("transport",),
    # parallel run/copy over transports, per-node results
    ("fanout",),
    # the controller's link to the node agents: wire client, fleet fan-outs, events
    ("agentlink",),
    # manifests, chunking and the P2P push
    ("content",),
    # applications: spec, acquire, lifecycle, barriers
    ("app",),
    # fleet operations (sweep; later audit, rollout, log collection)
    ("ops",),
    # the standing controller's machinery (warm links, detector, event journal,
    # app keeper, schedules): a library the service adapter drives
    ("control",),
    # the service's client (HTTP over its Unix socket): what the CLI and tests use
    ("client",),
    # the network-namespace lab and the test doubles
    ("lab", "testing"),
    # adapters: parse, call the library, render
    ("cli", "service", "api", "web"),  # api/ and web/ arrive with their issues
]


def _layer_of(module: str) -> int:
    """Index in LAYERS of a dotted ``shoal...`` module name (the package itself is base:
    what other modules take from it is ``__version__`` and submodules; its own
    imports follow :func:`test_the_root_re_exports_lazily`)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in ("", "__init__", "__main__"):
        return 0
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: shoal.{top} is in no layer of LAYERS")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _submodule(package: str, name: str) -> str:
    """``package.name`` when that is a module or package on disk, else ``package``."""
    where = ROOT.parent.joinpath(*package.split("."), name)
    return f"{package}.{name}" if where.is_dir() or where.with_suffix(".py").exists() else package


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported shoal module, line) for every import in the file, function-local too."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from shoal.agentlink import fleet``: a name may be a submodule
            found += [(_submodule(target, alias.name), node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name == "shoal" or name.startswith("shoal.")]


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_has_a_layer() -> None:
    tops = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in _modules()}
    named = {name for layer in LAYERS for name in layer}
    assert tops - {"__init__", "__main__"} <= named, sorted(tops - named)


def test_imports_point_down() -> None:
    violations = []
    for path in _modules():
        module = _module_name(path)
        if module == "shoal":
            continue  # the root re-exports every layer: its own rule, below
        own = _layer_of(module)
        for imported, line in _imports(path):
            if _layer_of(imported) > own:
                rel = path.relative_to(ROOT.parent)
                violations.append(f"{module} -> {imported} ({rel}:{line})")
    assert not violations, "imports that reach a higher layer:\n" + "\n".join(violations)


#: the one module ``shoal/__init__.py`` imports (as ``from .lazyexports import``, or absolute)
LAZY_HELPER = ("lazyexports", "shoal.lazyexports")


def test_the_root_re_exports_lazily() -> None:
    """``shoal/__init__.py`` may name any layer, but only for type checkers (its names load
    on first use, through :mod:`shoal.lazyexports`, the one module it imports), and no
    module of the package takes a re-exported name from it (a low layer would reach a
    high one through the root)."""
    root = ROOT / "__init__.py"
    tree = ast.parse(root.read_text(), str(root))
    statements = [  # top-level only: the TYPE_CHECKING block is an ``if``
        node
        for node in tree.body
        if not (isinstance(node, ast.ImportFrom) and node.module in LAZY_HELPER)
    ]
    eager = [
        f"line {node.lineno}"
        for node in statements
        if (isinstance(node, ast.ImportFrom) and (node.level or node.module == "shoal"))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shoal."))
        or (isinstance(node, ast.Import) and any(a.name.startswith("shoal") for a in node.names))
    ]
    assert not eager, f"shoal/__init__.py imports shoal modules at import time: {eager}"
    through_root = []
    for path in _modules():
        if path == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "shoal" and not node.level:
                for alias in node.names:
                    if alias.name != "__version__" and _submodule("shoal", alias.name) == "shoal":
                        through_root.append(f"{_module_name(path)}: {alias.name}")
    assert not through_root, through_root


def test_agent_imports_only_itself() -> None:
    """The agent ships as a zipapp of shoal/agent alone: it may import nothing else of shoal."""
    outside = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for imported, line in _imports(path):
            if not imported.startswith("shoal.agent"):
                outside.append(f"{_module_name(path)} -> {imported} (line {line})")
    assert not outside, "\n".join(outside)


def test_module_names_never_repeat() -> None:
    """A module's file name says what it holds, once: no two modules of src/shoal share one."""
    seen: dict[str, list[str]] = {}
    for path in _modules():
        if path.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(path.stem, []).append(_module_name(path))
    repeated = {stem: where for stem, where in seen.items() if len(where) > 1}
    assert not repeated, repeated


def test_imported_modules_exist() -> None:
    """Every ``shoal.*`` module named in an import exists (typing-only imports too, which
    nothing else runs: a module moved without its callers updated fails here)."""
    missing = []
    for path in _modules():
        for imported, line in _imports(path):
            where = ROOT.parent.joinpath(*imported.split("."))
            if not (where.is_dir() or where.with_suffix(".py").exists()):
                missing.append(f"{_module_name(path)} -> {imported} (line {line})")
    assert not missing, "\n".join(missing)
