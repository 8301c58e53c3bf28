"""``app`` rough edges (issue 19 item 7): spec path or name, ``app up -s``, link flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from shoal.app import store
from shoal.app.appspec import load, with_selections
from shoal.cli import appcmds
from shoal.cli.completion import full_parser
from shoal.errors import ConfigError
from shoal.state import State

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BYTETORRENT = EXAMPLES / "bytetorrent" / "bytetorrent.yaml"


def test_up_select_overrides_every_component_and_the_stored_document() -> None:
    spec = load(BYTETORRENT)
    assert {c.select for c in spec.components.values()} == {"@lab"}
    over = with_selections(spec, appcmds._selections(["@mine"], spec.components))
    assert {c.select for c in over.components.values()} == {"@mine"}
    assert {c["select"] for c in over.document["components"].values()} == {"@mine"}
    assert {c["select"] for c in spec.document["components"].values()} == {"@lab"}  # a copy


def test_up_select_for_one_component() -> None:
    spec = load(BYTETORRENT)
    given = appcmds._selections(["sender=@seed", "@peers[disk_free_mb>1]"], spec.components)
    assert given == {"sender": "@seed", None: "@peers[disk_free_mb>1]"}
    over = with_selections(spec, given)
    assert over.components["sender"].select == "@seed"
    assert over.components["receivers"].select == "@peers[disk_free_mb>1]"
    with pytest.raises(ConfigError, match="no component 'nope'"):
        with_selections(spec, {"nope": "@x"})


def test_app_commands_take_the_spec_path_or_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    spec = load(BYTETORRENT)
    copy = tmp_path / "renamed.yaml"  # a spec no app came up from: the name it declares
    copy.write_text(BYTETORRENT.read_text().replace(f"app: {spec.name}", "app: other"))
    (tmp_path / "bt").mkdir()  # its software tree
    with State() as st:
        store.ensure(st)
        store.save_app(st, "bt-run", str(BYTETORRENT), str(BYTETORRENT.parent), {}, "up")
        store.save_app(st, "second", "/elsewhere/x.yaml", "/elsewhere", {}, "up")
    for given, wanted in [
        (str(BYTETORRENT), "bt-run"),  # the app brought up from that file
        ("bt-run", "bt-run"),
        ("second", "second"),
        (str(copy), "other"),
        ("no-such-app", "no-such-app"),  # left to the command to refuse
    ]:
        assert appcmds._name(argparse.Namespace(name=given)) == wanted, given


@pytest.mark.parametrize(
    "argv",
    [
        ["app", "up", "x.yaml", "--host-keys", "accept-new", "--connect-timeout", "3"],
        ["facts", "refresh", "--host-keys", "accept-new", "--connect-timeout", "3"],
    ],
)
def test_up_and_facts_refresh_take_the_link_flags(argv: list[str]) -> None:
    args = full_parser().parse_args(argv)
    assert (args.host_keys, args.connect_timeout) == ("accept-new", 3.0)
