"""shoal.lazyexports: a package's names resolved from their homes on first use."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from shoal.lazyexports import lazy_exports


@pytest.fixture
def package() -> Iterator[types.ModuleType]:
    """A package ``pkg`` whose names live in ``pkg.impl`` and the stdlib's ``json``."""
    pkg = types.ModuleType("pkg")
    pkg.__path__ = []
    impl = types.ModuleType("pkg.impl")
    impl.value = object()  # type: ignore[attr-defined]
    sys.modules["pkg"], sys.modules["pkg.impl"] = pkg, impl
    homes = {"value": ".impl", "to_json": "json:dumps"}
    pkg.__getattr__, pkg.__dir__ = lazy_exports("pkg", homes, ["to_json", "value"])  # type: ignore[attr-defined]
    yield pkg
    del sys.modules["pkg"], sys.modules["pkg.impl"]


def test_a_relative_home_resolves_in_the_package_and_is_kept(package: types.ModuleType) -> None:
    assert "value" not in vars(package)
    assert package.value is sys.modules["pkg.impl"].value
    assert "value" in vars(package)  # the next access is a plain attribute read


def test_a_home_with_an_attribute_names_it_there(package: types.ModuleType) -> None:
    import json

    assert package.to_json is json.dumps


def test_an_unknown_name_is_an_attribute_error(package: types.ModuleType) -> None:
    with pytest.raises(AttributeError, match="'pkg' has no attribute 'nothing'"):
        package.nothing  # noqa: B018


def test_dir_lists_the_names_before_they_load(package: types.ModuleType) -> None:
    assert {"to_json", "value"} <= set(dir(package))
    assert "value" not in vars(package)
