"""``UpOptions.on_progress``'s counter (issue 19 item 7): told at once (0 done), on
every change only, and a spare's block adds one to do."""

from __future__ import annotations

from shoal.app.runtime import PhaseCount
from shoal.cli.render import bar


def test_phase_count_tells_each_change_once() -> None:
    told: list[tuple[str, int, int]] = []
    count = PhaseCount(lambda *a: told.append(a), "software web", 2)
    count.tick(object())  # a fan-out's on_result passes the outcome
    count.set(1)  # a push snapshot with nothing new: not told again
    count.grow()
    count.set(3)
    assert told == [
        ("software web", 0, 2),
        ("software web", 1, 2),
        ("software web", 1, 3),
        ("software web", 3, 3),
    ]
    PhaseCount(None, "agents", 4).tick()  # nobody listening: nothing to call


def test_bar_is_full_only_when_done() -> None:
    assert bar(0, 3, 6) == "[------] 0/3"
    assert bar(2, 3, 6) == "[####--] 2/3"
    assert bar(3, 3, 6) == "[######] 3/3"
    assert bar(5, 3, 6) == "[######] 5/3"  # never wider than its width
    assert bar(0, 0, 6) == "[------] 0/0"
