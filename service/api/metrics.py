"""Prometheus metrics, one registry per app so several apps (tests, replicas in one process) never clash.

Everything a rate or a ratio is wanted of is a counter (Prometheus computes rates across restarts): the
client pass rate is ``rate(dreamfix_fixes_total{outcome="fixed"}[1h]) / rate(dreamfix_fixes_total[1h])``,
a task's promotion rate is the same over ``dreamfix_gate_decisions_total``.
"""

from __future__ import annotations

import platform
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

#: rustc checks: ~0.1 s (cache hit) to tens of seconds (a test build on a loaded machine).
CHECK_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
#: Time a fix request waits for a worker: none on an idle daemon, minutes when the queue is full.
QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def build_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dreamfix")
    except PackageNotFoundError:
        return "0+unknown"


class ServiceMetrics:
    def __init__(self, model: str = "") -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU, memory, open fds, start time) and python_info, as every Python exporter has them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build = Info("dreamfix_build", "The running dreamfix build", registry=self.registry)
        self.build.info({"version": build_version(), "python": platform.python_version(), "model": model})
        self.requests = Counter(
            "dreamfix_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dreamfix_http_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.fixes = Counter(
            "dreamfix_fixes_total",
            "Fix requests answered, by outcome (fixed | failed | unverified); rate it for the pass rate",
            ["outcome"],
            registry=self.registry,
        )
        self.scheduler_leader = Gauge(
            "dreamfix_scheduler_leader",
            "1 when this replica holds the scheduler lease and runs the scheduled day/night jobs",
            registry=self.registry,
        )
        self.queue_depth = Gauge("dreamfix_queue_depth", "Jobs waiting or running", registry=self.registry)
        self.queue_wait = Histogram(
            "dreamfix_queue_wait_seconds",
            "Time a fix request waited in the work queue before a worker took it",
            buckets=QUEUE_BUCKETS,
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "dreamfix_rustc_check_seconds",
            "Duration of one sandboxed rustc check (compile, or build + tests), by whether the cache answered",
            ["cached"],
            buckets=CHECK_BUCKETS,
            registry=self.registry,
        )
        self.runs = Counter(
            "dreamfix_runs_total",
            "Day and night runs this process finished, by kind and status (succeeded | failed)",
            ["kind", "status"],
            registry=self.registry,
        )
        self.gate = Counter(
            "dreamfix_gate_decisions_total",
            "Gate verdicts on candidate coefficient versions this process's nights made, by task and decision",
            ["task", "decision"],
            registry=self.registry,
        )
        self.last_night = Gauge(
            "dreamfix_last_successful_night_timestamp_seconds",
            "Unix time the last successful night finished (from the database: any replica's night counts)",
            registry=self.registry,
        )
        self.active_version = Gauge(
            "dreamfix_active_adapter_version",
            "Active coefficient version per task (0 = base model)",
            ["task"],
            registry=self.registry,
        )
        self.route_epoch = Gauge("dreamfix_route_epoch", "Route table epoch served", registry=self.registry)
        self.model_ready = Gauge("dreamfix_model_ready", "1 when the model is loaded", registry=self.registry)

    def observe_fix(self, fixed: bool, verified: bool) -> None:
        outcome = "fixed" if fixed else "unverified" if not verified else "failed"
        self.fixes.labels(outcome).inc()

    def observe_check(self, seconds: float, cached: bool) -> None:
        self.check_seconds.labels("true" if cached else "false").observe(seconds)

    def observe_run(self, kind: str, status: str, decisions: dict[str, str]) -> None:
        """One finished run; ``decisions`` maps task → gate decision (promoted | rejected | pending)."""
        self.runs.labels(kind, status).inc()
        for task, decision in decisions.items():
            self.gate.labels(task, decision).inc()

    def set_last_night(self, finished_at: datetime | None) -> None:
        if finished_at is not None:
            self.last_night.set(finished_at.timestamp())
