"""Lazy package names: a package's public names, imported from their modules on first use.

A package that re-exports names (``shoal``, ``shoal.fanout``, ``shoal.testing``)
declares where each one lives and takes its module ``__getattr__`` and
``__dir__`` (PEP 562) from :func:`lazy_exports`::

    _HOMES = {"run": ".commands", "load_app": "shoal.app.appspec:load"}
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)

A home is a module, relative to the package when it starts with a dot, and
optionally ``:attribute`` when the name there differs. The first access imports
the module and stores the value in the package, so later ones are plain
attribute reads. This module imports nothing but :mod:`importlib` (and no
``typing``: ``import shoal`` must stay cheap; see DESIGN.md).
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # ``typing`` costs ~10 ms to import; mypy honours this one too
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any


def lazy_exports(
    package: str, homes: Mapping[str, str], names: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, resolving ``homes`` lazily.

    ``names`` (the package's ``__all__``) are listed by ``dir()`` before they load.
    """
    namespace = sys.modules[package].__dict__
    listed = tuple(names)

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = home.partition(":")
        value = getattr(importlib.import_module(module, package), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *listed})

    return __getattr__, __dir__
