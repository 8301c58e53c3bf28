"""The ``rollout:`` block of an application spec (issue 15 item 1): typed, checked at file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shoal.app.appspec import load
from shoal.errors import ConfigError

BASE = """\
app: demo
components:
  web:
    select: "@all"
    processes:
      - {name: server, service: "exec sleep 60"}
"""


def spec(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(BASE + textwrap.dedent(extra))
    return path


def test_default_is_one_stage_a_quarter_at_a_time(tmp_path: Path) -> None:
    plan = load(spec(tmp_path)).rollout
    assert plan.stages == ["100%"] and plan.max_unavailable == "25%" and plan.failure_budget == 0


def test_the_block_is_read(tmp_path: Path) -> None:
    plan = load(
        spec(
            tmp_path,
            """\
            rollout:
              stages: "@alpha,10%,100%"
              max_unavailable: 2
              failure_budget: 1
              min_healthy_time: 0.5
              pause: manual
            """,
        )
    ).rollout
    assert plan.stages == ["@alpha", "10%", "100%"] and plan.max_unavailable == "2"
    assert plan.failure_budget == 1 and plan.min_healthy_time == 0.5 and plan.pause is None


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("rollout: {stage: 10%}", r"app.yaml:7: .*rollout.*stage"),
        ("rollout: {max_unavailable: 0}", r"app.yaml:7: .*max_unavailable"),
        ("rollout: {stages: [150%]}", r"app.yaml:7: .*between 0 and 100"),
        ("rollout: {pause: later}", r"app.yaml:7: .*pause"),
    ],
)
def test_a_bad_block_names_its_line(tmp_path: Path, block: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(spec(tmp_path, block + "\n"))
