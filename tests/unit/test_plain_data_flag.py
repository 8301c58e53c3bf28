"""``--plain-data`` reaches every push: ``shoal push``, ``app up``'s software, rollouts."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from shoal.app import software
from shoal.cli import main as cli_main
from shoal.content.push import PushOptions, PushResult
from shoal.content.rollout import RolloutPlan
from shoal.nodes.model import Node


def _parse(argv: list[str]) -> Any:
    parser = cli_main._build_parser(sorted(set(cli_main.COMMANDS.values())))
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["push", "src", "dst"],
        ["app", "up", "spec.yaml"],
        ["rollout", "start", "src", "dst", "--programs", "p"],
    ],
)
def test_every_command_that_pushes_has_the_flag_off_by_default(argv: list[str]) -> None:
    assert _parse(argv).plain_data is False
    assert _parse([*argv, "--plain-data"]).plain_data is True


def test_tls_is_the_default_and_a_rollout_plan_keeps_the_choice_for_resume() -> None:
    assert PushOptions().plain_data is False
    plan = RolloutPlan()
    plan.plain_data = True
    assert RolloutPlan(**asdict(plan)).plain_data is True  # what a resume rebuilds
    assert RolloutPlan().plain_data is False


def test_app_software_pushes_pass_the_choice_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[PushOptions] = []

    async def fake_push(nodes: Any, source: Any, target: str, opts: PushOptions, **kw: Any) -> Any:
        seen.append(opts)
        return PushResult()

    monkeypatch.setattr("shoal.content.push_async", fake_push)
    tree = software.Tree("sw", Path("/nonexistent"), "d" * 16)
    node = Node("n1", "10.0.0.1")
    for plain in (False, True):
        asyncio.run(software.push_software([node], tree, {"n1": "a/sw"}, plain_data=plain))
    assert [o.plain_data for o in seen] == [False, True]
