"""Measuring a lab link: the goodput of one TCP stream between two lab hosts.

Both ends are ``python3`` socket programs started inside the namespaces (the
controller end runs in the root namespace); the receiver measures after a
0.5 s warm-up so slow start does not count. Used by ``bench/lab.py`` and the
lab's shaping tests. Needs root (network namespaces).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from shoal.errors import LabError

if TYPE_CHECKING:
    from shoal.lab.labctl import Lab

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
PORT = 5201

_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20)
start = time.monotonic(); t0 = None; n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    now = time.monotonic()
    if t0 is None and now - start >= 0.5: t0 = now; n = 0
    elif t0 is not None: n += len(b)
print(n * 8 / (time.monotonic() - t0))
"""

_CLIENT = """
import socket, sys, time
addr, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for _ in range(200):
    try:
        s = socket.create_connection((addr, port), timeout=5); break
    except OSError: time.sleep(0.05)
buf = b"x" * (1 << 16); end = time.monotonic() + seconds
while time.monotonic() < end: s.sendall(buf)
s.close()
"""


def transfer_rate(lab: Lab, src: str, dst: str, seconds: float = 3.0) -> float:
    """Bits per second of one TCP stream ``src`` → ``dst`` (``src`` may be ``controller``)."""
    dst_addr = next((n.host for n in lab.nodes() if n.name == dst), None)
    if dst_addr is None:
        raise LabError(f"lab {lab.name}: no node {dst}")
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns_of(dst), PY, "-c", _SERVER, str(PORT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        where = [] if src == "controller" else ["ip", "netns", "exec", lab.netns_of(src)]
        client = subprocess.run(
            [*where, PY, "-c", _CLIENT, dst_addr, str(PORT), str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        if client.returncode != 0:
            raise LabError(f"rate {src} -> {dst}: sender failed: {client.stderr.strip()[-200:]}")
        out, err = server.communicate(timeout=30)
        if server.returncode != 0:
            raise LabError(f"rate {src} -> {dst}: receiver failed: {err.strip()[-200:]}")
        return float(out.strip())
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
