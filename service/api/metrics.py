"""Prometheus metrics, one registry per app so several apps (tests, replicas in one process) never clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "dreamfix_fixes_total", "Fix requests by outcome", ["outcome"], registry=self.registry
        )
        self.pass_rate = Gauge(
            "dreamfix_pass_rate",
            "Share of fix requests fixed since start (client traffic) and of the last gate eval",
            ["scope"],
            registry=self.registry,
        )
        self.queue_depth = Gauge("dreamfix_queue_depth", "Jobs waiting or running", registry=self.registry)
        self.active_version = Gauge(
            "dreamfix_active_adapter_version",
            "Active coefficient version per task (0 = base model)",
            ["task"],
            registry=self.registry,
        )
        self.route_epoch = Gauge("dreamfix_route_epoch", "Route table epoch served", registry=self.registry)
        self.model_ready = Gauge("dreamfix_model_ready", "1 when the model is loaded", registry=self.registry)
        self._fixed = 0
        self._total = 0

    def observe_fix(self, fixed: bool, verified: bool) -> None:
        outcome = "fixed" if fixed else "unverified" if not verified else "failed"
        self.fixes.labels(outcome).inc()
        self._total += 1
        self._fixed += int(fixed)
        self.pass_rate.labels("client").set(self._fixed / self._total)
