"""DSMT's lifecycle scripts in a package: which of them a software tree carries.

A package may carry ``install.sh``, ``start.sh``, ``stop.sh`` and ``status.sh`` at
its top. A step ``lifecycle: S`` runs software S by them (:func:`service_fields`):
``start.sh`` is the service's command, ``stop.sh`` its ``stop_command`` (run by the
agent before the stop signal), ``status.sh`` its health check unless the step names
one; ``install.sh`` runs as S's first install step (:func:`install_commands`).
Only the scripts the package has are used: they are looked up on the controller,
in the local directory or in the depot entry's manifest, once per pass.

Each script runs through :func:`script_command`, a ``/bin/sh`` line that runs it
directly when it is executable on the node and with ``sh`` otherwise (as DSMT's
deployment agent did: a package's mode bits are not a contract), and that ends a
missing or failing script with one line on stderr naming the package, the script
and its exit status; the controller's failure line (install step, service state,
the agent's ``stop_command`` and health events) carries it with the node's name.
"""

from __future__ import annotations

from shoal.content.depot import Depot
from shoal.errors import ConfigError
from shoal.state import State

from .appspec import AppSpec, Software, Step

SCRIPTS = ("install.sh", "start.sh", "stop.sh", "status.sh")


def script_command(software: str, script: str, where: str) -> str:
    """The shell line running ``where/script`` of package ``software`` (``where``: a
    directory, ``${sw.S}`` or ``.``): executable or not, its exit status kept, one line
    saying which script of which package is missing or failed with what status."""
    said = f"package {software}: {script}"
    return (
        f"f={where}/{script}; "
        f'if [ ! -f "$f" ]; then echo "{said} is missing ($f)" >&2; exit 127; fi; '
        f'if [ -x "$f" ]; then "$f"; else sh "$f"; fi; s=$?; '
        f'[ "$s" -eq 0 ] || echo "{said} failed with exit status $s" >&2; exit "$s"'
    )


def scripts_of(sw: Software, state: State) -> frozenset[str]:
    """The lifecycle scripts (regular files at the top of the tree) ``sw`` carries."""
    if not sw.depot:
        return frozenset(name for name in SCRIPTS if (sw.source / name).is_file())
    _, tree = Depot(state).tree(sw.depot)
    return frozenset(e.path for e in tree.manifest.entries if e.kind == "f" and e.path in SCRIPTS)


class PackageScripts:
    """The scripts of each software of one spec, looked up once per pass."""

    def __init__(self, spec: AppSpec, state: State) -> None:
        self.spec = spec
        self.state = state
        self._found: dict[str, frozenset[str]] = {}

    def of(self, software: str) -> frozenset[str]:
        if software not in self._found:
            self._found[software] = scripts_of(self.spec.software[software], self.state)
        return self._found[software]

    def install_commands(self, software: str) -> tuple[str, ...]:
        """The install steps of ``software``: ``./install.sh`` first when a lifecycle
        step runs it and the package has one, then those the spec lists."""
        listed = self.spec.software[software].install
        used = any(
            step.lifecycle == software for c in self.spec.components.values() for step in c.steps
        )
        if used and "install.sh" in self.of(software):
            return (script_command(software, "install.sh", "."), *listed)
        return listed

    def service_fields(self, step: Step) -> dict[str, str | None]:
        """``command``, ``health`` and ``stop_command`` (unexpanded) of a ``lifecycle``
        step; ConfigError when its package has no ``start.sh``."""
        sw = step.lifecycle
        found = self.of(sw)
        if "start.sh" not in found:
            source = self.spec.software[sw].depot or str(self.spec.software[sw].source)
            raise ConfigError(
                f"{self.spec.file}:{step.line}: lifecycle: software {sw} ({source}) has no "
                "start.sh at its top"
            )
        top = f"${{sw.{sw}}}"
        status = script_command(sw, "status.sh", top) if "status.sh" in found else None
        return {
            "command": script_command(sw, "start.sh", top),
            "health": step.health or status,
            "stop_command": script_command(sw, "stop.sh", top) if "stop.sh" in found else None,
        }
