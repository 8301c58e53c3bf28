"""Prometheus metrics at ``GET /metrics``, read from the live controller at each scrape.

One :class:`~prometheus_client.CollectorRegistry` per service (never the
process-global one), holding :class:`ServiceCollector` and the process
collector (``process_resident_memory_bytes``, ``process_cpu_seconds_total``).
The collector reads :mod:`shoal.control.counters` when scraped; nothing is
instrumented per beat or per event. The metrics:

``shoal_nodes{state}``                         managed nodes per link state (every state)
``shoal_failed_nodes``                         nodes in the failed set
``shoal_link_attaches_total``                  held connections made ready (agent included)
``shoal_link_reconnects_total``                attaches after a node's first
``shoal_ssh_connects_total``                   SSH connections made (links and cold fallbacks)
``shoal_agent_restarts_total``                 agents started again under a held connection
``shoal_heartbeat_rtt_seconds``                gauge histogram: the nodes' smoothed heartbeat
                                               round-trip times now
``shoal_programs{state}``                      programs per state, as the agents' beats last
                                               reported them (the supervisors' own counts)
``shoal_program_restarts_total{node,program}`` restarts the agents reported
``shoal_events_total{topic}``                  events stored, per topic
``shoal_reconcile_actions_total{action}``      the keeper's actions (replaced, restarted...)
``shoal_keeper_rounds_total``                  keeper rounds
``shoal_push_bytes_total{node,via}``           bytes a node received, ``via`` source or peers
``shoal_journal_last_seq``                     the newest event's sequence number

Counters count from the service's start (a restarted service starts at 0, as
Prometheus expects of a process). The route needs no ``Shoal-Protocol``
header (a scraper sends none); on TCP it needs a token like every route.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from shoal.control.controller import Controller
from shoal.control.counters import JournalCounts, PushBytes, link_counts
from shoal.nodes import health

router = APIRouter()

#: Upper bounds of the heartbeat round-trip buckets, seconds.
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceCollector(Collector):
    """Every ``shoal_*`` metric, read from ``ctl`` (and the app's push jobs) when collected."""

    def __init__(self, ctl: Controller, app_state: Any) -> None:
        self.ctl = ctl
        self.app_state = app_state
        self.journal = JournalCounts(ctl.journal, since=ctl.started)
        self.pushes = PushBytes()

    def collect(self) -> Iterator[Metric]:
        yield from self._links()
        self.journal.catch_up()
        yield from self._journal()
        yield from self._pushes()

    def _links(self) -> Iterator[Metric]:
        counts = link_counts(self.ctl.links.links)
        nodes = GaugeMetricFamily("shoal_nodes", "Managed nodes per link state", labels=["state"])
        for state, n in counts.by_state.items():
            nodes.add_metric([state], n)
        yield nodes
        yield GaugeMetricFamily(
            "shoal_failed_nodes", "Nodes in the failed set", len(health.failures(self.ctl.state))
        )
        for name, value, text in (
            ("shoal_link_attaches", counts.attaches, "Held connections made ready"),
            ("shoal_link_reconnects", counts.reconnects, "Attaches after a node's first"),
            ("shoal_ssh_connects", counts.connects, "SSH connections made"),
            ("shoal_agent_restarts", counts.agent_restarts, "Agents started again under a link"),
        ):
            yield CounterMetricFamily(name, text, value)
        yield _rtt_histogram(list(counts.rtt_ms.values()))

    def _journal(self) -> Iterator[Metric]:
        tally = self.journal
        programs = GaugeMetricFamily(
            "shoal_programs", "Programs per last reported state", labels=["state"]
        )
        links = self.ctl.links.links
        for state, n in links.facts.program_states(links.links).items():
            programs.add_metric([state], n)
        yield programs
        restarts = CounterMetricFamily(
            "shoal_program_restarts", "Program restarts reported", labels=["node", "program"]
        )
        for (node, program), n in sorted(tally.restarts.items()):
            restarts.add_metric([node, program], n)
        yield restarts
        events = CounterMetricFamily("shoal_events", "Events stored per topic", labels=["topic"])
        for topic, n in sorted(tally.events.items()):
            events.add_metric([topic], n)
        yield events
        actions = CounterMetricFamily(
            "shoal_reconcile_actions", "The keeper's reconcile actions", labels=["action"]
        )
        for action, n in sorted(tally.reconcile.items()):
            actions.add_metric([action], n)
        yield actions
        yield CounterMetricFamily("shoal_keeper_rounds", "Keeper rounds", self.ctl.keeper.rounds)
        yield GaugeMetricFamily(
            "shoal_journal_last_seq", "The newest event's sequence number", self.ctl.journal.last
        )

    def _pushes(self) -> Iterator[Metric]:
        found = getattr(self.app_state, "jobs", None)
        for job in found.list("push") if found is not None else ():
            self.pushes.absorb(job.id, job.records)
        family = CounterMetricFamily(
            "shoal_push_bytes", "Bytes a node received in pushes", labels=["node", "via"]
        )
        for via, counts in (("source", self.pushes.source), ("peers", self.pushes.peers)):
            for node, n in sorted(counts.items()):
                family.add_metric([node, via], n)
        yield family


def _rtt_histogram(samples_ms: list[float]) -> GaugeHistogramMetricFamily:
    seconds = sorted(ms / 1000 for ms in samples_ms)
    buckets = [(repr(b), float(sum(1 for s in seconds if s <= b))) for b in RTT_BUCKETS]
    buckets.append(("+Inf", float(len(seconds))))
    return GaugeHistogramMetricFamily(
        "shoal_heartbeat_rtt_seconds",
        "The nodes' smoothed heartbeat round-trip times now",
        buckets=buckets,
        gsum_value=sum(seconds),
    )


def registry(request: Request) -> CollectorRegistry:
    """The service's own registry (made at the first scrape)."""
    found = getattr(request.app.state, "metrics", None)
    if not isinstance(found, CollectorRegistry):
        found = CollectorRegistry(auto_describe=False)
        ctl: Controller = request.app.state.controller
        found.register(ServiceCollector(ctl, request.app.state))
        ProcessCollector(registry=found)
        request.app.state.metrics = found
    return found


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The metrics in Prometheus' text format."""
    return Response(generate_latest(registry(request)), media_type=CONTENT_TYPE_LATEST)
