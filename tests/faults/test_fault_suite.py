"""The fault suite on the real lab (issue 17 part 2): one test per row of bench/faults.py.

Each test runs a scenario of :mod:`shoal.testing.faultsuite` and asserts its row;
the row's details (which node, what it showed) are the failure message.
``SHOAL_FAULT_REPS`` raises the repetitions of the randomised ones.
Single cases already covered elsewhere are not repeated here: symlinks, ``..``
and modes in pulls (tests/integration/test_pull_safety.py), push tree refusals
(test_push_tree_safety.py, test_push.py's escaping manifests and token check),
interrupts (test_interrupts.py, test_copy_interrupt.py), host-key advice
(test_hostkey_message.py, test_hostkey_decisions.py), chunk-server floods, slow
readers, silent and never-authenticating clients (tests/unit/test_chunkserver_limits.py),
bounded parsers (tests/unit/test_hostile_input.py, test_fuzz_inputs.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shoal.nodes.model import Node
from shoal.testing import faultsuite as fs

from .conftest import REPS

pytestmark = pytest.mark.lab


def _check(row: fs.FaultRow) -> None:
    assert row.ok, f"{row.fault}: {row.observed}; lost {row.lost}; " + " | ".join(row.details)


def _env(lab: Any) -> dict[str, str]:
    return {**os.environ, "SHOAL_NO_SERVICE": "1", "SHOAL_LAB": lab.name}


@pytest.mark.slow
def test_a_node_killed_mid_push_never_leaves_a_partial_version(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.node_killed_mid_push(lab, fleet, tmp_path, reps=REPS))


@pytest.mark.slow
def test_a_controller_killed_mid_push_leaves_whole_versions_and_a_rerun_completes(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.controller_killed_mid_push(lab, fleet, tmp_path, reps=REPS, env=_env(lab)))


def test_ten_percent_loss_on_every_link_push_and_run_complete(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.packet_loss(lab, fleet, tmp_path, 10))


@pytest.mark.slow
@pytest.mark.xfail(
    reason="30 % each way on every node port is ~51 % node to node: batches now keep what "
    "arrived, but SSH keepalives (3 x 5 s), the 10 s connect and 12 empty batches in a row "
    "still drop nodes (issue 17 part 2, open)",
    strict=False,
)
def test_thirty_percent_loss_on_every_link_push_and_run_complete(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.packet_loss(lab, fleet, tmp_path, 30, size=500_000))


def test_a_corrupt_peer_is_rejected_and_the_push_completes(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.corrupt_peer(lab, fleet, tmp_path))


def test_a_full_disk_is_one_line_naming_node_and_path_and_keeps_the_old_version(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.disk_full(lab, fleet, tmp_path))


def test_a_changed_host_key_refuses_that_node_in_every_command(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.changed_host_key(lab, fleet, tmp_path))


def test_two_controllers_on_one_state_dir_lose_no_failed_node(
    lab: Any, fleet: list[Node], tmp_path: Path
) -> None:
    _check(fs.two_controllers(lab, fleet, _env(lab), reps=REPS))
