"""Integration helpers; the session lab itself is tests/conftest.py's (shared with tests/faults).

``lab`` (8 real sshd nodes, up for the session, always taken down) and
``shoal_home`` are fixtures of tests/conftest.py; ``remote``, ``unique_lab_name``
and ``lab_skip_reason`` are re-exported here for the tests that import them
from ``.conftest``. Tests that kill, cut or shape a node restore it in ``finally``.
"""

from __future__ import annotations

from ..conftest import lab_skip_reason, remote, unique_lab_name, unmount

__all__ = ["lab_skip_reason", "remote", "unique_lab_name", "unmount"]
