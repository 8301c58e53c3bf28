"""Long operations of the service as resources: runs, copies and pushes.

A POST that starts one answers at once ``202 {"id", "href"}``; the operation
runs as a task in the service's loop and its :class:`Job` keeps what a reader
needs: the per-node records in the order the nodes finished, the latest
progress snapshot (pushes), and at the end the summary or the error.
:meth:`Job.follow` yields from any record index on as things happen: each
change wakes the followers (nothing polls), and a follow ends when the job
does or the service stops.

Jobs live in memory while the service runs; the last :data:`KEEP` finished
ones of each kind are kept for reading. They are not journaled: what they do
to nodes is (health in the failed set, the agents' events).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from shoal.errors import ShoalError, UnknownNameError

from .routes import error_response

log = logging.getLogger("shoal.serve")

#: Finished jobs kept per kind.
KEEP = 100
#: The collection each kind of job is found under, ``/api/v1/{collection}/{id}``.
COLLECTIONS = {"run": "runs", "copy": "copies", "push": "pushes"}


@dataclass
class Job:
    """One long operation and what it has produced so far."""

    id: str
    kind: str
    request: dict[str, Any]
    started: float = field(default_factory=time.time)
    state: str = "running"  # running, done, failed, cancelled
    finished: float | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    task: asyncio.Future[Any] | None = field(default=None, repr=False)
    changes: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def href(self) -> str:
        return f"/api/v1/{COLLECTIONS[self.kind]}/{self.id}"

    @property
    def done(self) -> bool:
        return self.state != "running"

    def add(self, record: dict[str, Any]) -> None:
        """One node finished."""
        self.records.append(record)
        self._changed()

    def set_progress(self, progress: dict[str, Any]) -> None:
        self.progress = progress
        self._changed()

    def _changed(self) -> None:
        self.changes += 1
        self._wake.set()
        self._wake = asyncio.Event()

    def as_json(self, records: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "href": self.href,
            "state": self.state,
            "started": self.started,
            "finished": self.finished,
            "request": self.request,
            "nodes_done": len(self.records),
            "progress": self.progress,
            "summary": self.summary,
            "error": self.error,
        }
        if records:
            out["results"] = self.records
        return out

    async def follow(
        self, stop: asyncio.Event, start: int = 0, progress: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """``{"result": R}`` per node from record ``start`` on, ``{"progress": P}`` on each
        new snapshot when ``progress``, then ``{"end": JOB}`` (without its records)."""
        sent, seen = max(0, start), -1
        while True:
            wake = self._wake
            changes = self.changes
            while sent < len(self.records):
                yield {"result": self.records[sent]}
                sent += 1
            if progress and self.progress is not None and seen != changes:
                seen = changes
                yield {"progress": self.progress}
            if self.done:
                yield {"end": self.as_json(records=False)}
                return
            if stop.is_set():
                return
            stopping = asyncio.ensure_future(stop.wait())
            waking = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait([stopping, waking], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                waking.cancel()


Work = Callable[[Job], Awaitable[dict[str, Any]]]


class Jobs:
    """The service's jobs, by kind and id."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._jobs: dict[str, dict[str, Job]] = {kind: {} for kind in COLLECTIONS}

    def start(self, kind: str, request: dict[str, Any], work: Work) -> Job:
        """A new job running ``work(job)``, whose answer becomes its summary."""
        job = Job(f"{kind[0]}{secrets.token_hex(6)}", kind, request)
        self._jobs[kind][job.id] = job
        job.task = asyncio.ensure_future(self._run(job, work))
        return job

    async def _run(self, job: Job, work: Work) -> None:
        try:
            job.summary = await work(job)
            job.state = "done"
        except asyncio.CancelledError:
            job.state = "cancelled"
        except ShoalError as exc:
            job.state = "failed"
            job.error = json.loads(error_response(exc).body)
        except Exception as exc:  # a bug: the job says so, the service goes on
            log.error("%s %s failed", job.kind, job.id, exc_info=exc)
            job.state = "failed"
            job.error = {"kind": "error", "type": "ShoalError", "error": f"internal error: {exc!r}"}
        finally:
            job.finished = time.time()
            job._changed()
            self._prune(job.kind)

    def _prune(self, kind: str) -> None:
        finished = [j for j in self._jobs[kind].values() if j.done]
        for old in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[kind][old.id]

    def get(self, kind: str, job_id: str) -> Job:
        """The job, or UnknownNameError (404) naming what is known."""
        found = self._jobs[kind].get(job_id)
        if found is None:
            raise UnknownNameError(
                f"no {kind} {job_id!r} (this service keeps its last {self.keep} finished "
                f"{COLLECTIONS[kind]} while it runs)"
            )
        return found

    def list(self, kind: str) -> list[Job]:
        return list(self._jobs[kind].values())


def jobs(request: Request) -> Jobs:
    """The app's job registry (made on first use)."""
    found = getattr(request.app.state, "jobs", None)
    if not isinstance(found, Jobs):
        found = Jobs()
        request.app.state.jobs = found
    return found


class Accepted(BaseModel):
    """The 202 answer of a POST that started a job: follow ``href``."""

    id: str
    href: str
    state: str


#: The OpenAPI ``responses`` of a route that starts a job.
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "started: follow href"}
}


def accepted(job: Job) -> dict[str, Any]:
    """The 202 body of a started job."""
    return {"id": job.id, "href": job.href, "state": job.state}
