"""Several model workers (``limits.model_workers``): each has its own copy of the model, so two fixes
generate at the same time instead of taking turns on one model; every copy serves the one Share bank."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.app import create_app
from service.app_services import Services
from tests.helpers import install_version, make_settings, wait_ready
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[httpx.Client, Services]]:
    tmp = tmp_path_factory.mktemp("workers")
    settings = make_settings(
        tmp,
        tiny_model_dir,
        limits={
            "max_body_bytes": 64 * 1024,
            "max_code_bytes": 16 * 1024,
            "queue_size": 8,
            "model_workers": 2,
        },
    )
    services = Services.build(settings)
    install_version(settings.db_url, tmp)
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        wait_ready(client)
        yield client, services


def _meet_on_first_generate(runtimes: list[Any], barrier: threading.Barrier) -> None:
    """Each copy's first generate waits at ``barrier`` until the other copy is generating too (then runs the
    real generate): with one copy the second fix could never get there, and the barrier breaks."""
    for runtime in runtimes:
        real = runtime.generate
        first = threading.Event()

        def generate(*args: Any, _real: Any = real, _first: threading.Event = first, **kwargs: Any) -> Any:
            if not _first.is_set():
                _first.set()
                barrier.wait()
            return _real(*args, **kwargs)

        runtime.generate = generate


def test_two_model_workers_generate_two_fixes_at_once(live: tuple[httpx.Client, Services]) -> None:
    client, services = live
    serving = services.serving
    assert services.queue.workers == 2
    [copy] = serving.replicas
    assert copy is not serving.runtime and copy.model is not serving.runtime.model
    # The promoted version reached both copies through the one bank.
    assert serving.active_versions() == {"moves": 1}
    assert copy.bank is serving.bank is not None

    barrier = threading.Barrier(2, timeout=30)
    _meet_on_first_generate([serving.runtime, copy], barrier)
    codes = [f'fn main() {{\n    let n: i32 = "{name}";\n    println!("{{n}}");\n}}\n' for name in ("a", "b")]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda code: client.post("/v1/fix", json={"code": code}), codes))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert not barrier.broken
    for answer in answers:
        body = answer.json()
        assert body["attempts"] and any(a["strategy"].startswith("model") for a in body["attempts"]), body


def test_the_server_is_ready_only_once_its_active_versions_are_installed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """``load`` publishes the runtime before its first sync (which needs it): /readyz must not say ready in
    between, or a first request would meet the base model instead of the promoted version (seen as a flaky
    ``active_versions() == {}`` right after ready under load)."""
    settings = make_settings(tmp_path, tiny_model_dir)
    services = Services.build(settings)
    install_version(settings.db_url, tmp_path)
    serving = services.serving
    seen: list[bool] = []
    real_sync = serving.sync

    def observed_sync() -> bool:
        seen.append(serving.model_ready)
        return real_sync()

    serving.sync = observed_sync  # type: ignore[method-assign]
    serving.load()
    assert seen and seen[0] is False, "ready was reported before the first sync installed the versions"
    assert serving.model_ready and serving.active_versions() == {"moves": 1}
