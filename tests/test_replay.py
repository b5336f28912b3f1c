"""Replay buffers per task group (learner/replay.py) and the night's use of them (service.night.with_replay)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from learner.replay import ReplayBuffer, example_key, mix
from service.db import migrate
from service.db.repositories import RunRepository
from service.db.session import Database
from service.jobs import RunContext
from service.night import with_replay
from service.settings import Settings


def ex(i: int) -> tuple[list[dict[str, str]], str]:
    return [{"role": "user", "content": f"fix program {i}"}], f"```rust\nfn main() {{ let _ = {i}; }}\n```"


def test_the_buffer_keeps_each_example_once_and_the_newest_cap(tmp_path: Path) -> None:
    buffer = ReplayBuffer(tmp_path, cap=3)
    assert buffer.add("moves", [ex(1), ex(2)], night=1) == 2
    assert buffer.add("moves", [ex(2), ex(3), ex(4)], night=2) == 3  # ex(1) is the oldest: evicted
    entries = buffer.load("moves")
    assert [e.answer for e in entries] == [ex(i)[1] for i in (2, 3, 4)]
    assert [e.night for e in entries] == [2, 2, 2]  # a repeat moves to the newest end
    assert entries[0].key == example_key(ex(2))
    assert buffer.replayed("moves", [ex(4)]) == [ex(3), ex(2)]  # newest first, tonight's left out
    assert buffer.groups() == ["moves"] and buffer.load("borrows") == []
    assert ReplayBuffer(tmp_path / "off", cap=0).add("moves", [ex(1)], night=1) == 0
    assert not (tmp_path / "off").exists()
    with pytest.raises(ValueError, match="bad replay group name"):
        buffer.add("../etc", [ex(1)], night=1)
    with pytest.raises(ValueError, match="replay cap must be"):
        ReplayBuffer(tmp_path, cap=-1)


def test_mix_takes_tonights_examples_first_and_fills_with_replayed_ones() -> None:
    new, old = [ex(i) for i in range(3)], [ex(i) for i in range(10, 20)]
    chosen = mix(new, old, 5, random.Random(0))
    assert len(chosen) == 5 and all(e in chosen for e in new)
    assert mix(new, old, 5, random.Random(3)) == mix(new, old, 5, random.Random(3))  # seeded
    assert all(e in new for e in mix(new, old, 2, random.Random(1)))
    assert len(mix(new, old, 100, random.Random(0))) == 13
    # the model's own verified replies are chosen before tonight's reference targets, whatever the draw
    mine = [ex(i) for i in range(30, 33)]
    tonight = [ex(i) for i in range(40, 60)] + mine
    for seed in range(5):
        chosen = mix(tonight, old, 5, random.Random(seed), preferred=mine)
        assert len(chosen) == 5 and all(e in chosen for e in mine)
        assert all(e in tonight for e in chosen)  # tonight's fill the rest before any replayed one
    assert all(e in mine for e in mix(tonight, old, 2, random.Random(1), preferred=mine))


def test_a_group_too_small_for_one_night_is_kept_and_trained_once_it_holds_enough(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, night={"min_examples_per_task": 3, "max_examples_per_task": 4, "replay_cap": 10}
    )
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)

    def night(grouped: dict[str, list[tuple[list[dict[str, str]], str]]]) -> tuple[dict, RunContext]:
        with db.session() as s:
            run_id = RunRepository(s).create("night", "test").id
        ctx = RunContext(run_id, "night", db, settings)
        return with_replay(ctx, grouped, wanted=None), ctx

    first, ctx1 = night({"moves": [ex(1), ex(2)]})
    assert first == {} and ctx1.summary["replay"] == {}  # below the minimum: not trained, but buffered
    second, ctx2 = night({"moves": [ex(3)], "borrows": [ex(7)]})
    assert sorted(a for _, a in second["moves"]) == [ex(i)[1] for i in (1, 2, 3)]
    assert "borrows" not in second
    assert ctx2.summary["replay"]["moves"] == {"new": 1, "own": 0, "replayed": 2, "buffer": 3}
    third, ctx3 = night({"moves": [ex(i) for i in range(4, 9)]})  # 5 new > max 4: no room for replay
    assert len(third["moves"]) == 4 and all(e in [ex(i) for i in range(4, 9)] for e in third["moves"])
    assert ctx3.summary["replay"]["moves"]["replayed"] == 0
    fourth, _ = night({})  # no new data tonight: the buffer alone refits the groups that hold enough
    assert set(fourth) == {"moves"} and len(fourth["moves"]) == 4
    assert "borrows" not in fourth  # one example: still waiting
    # the router's grouping changed (fine -> coarse): the night asks for its own groups only, so the old
    # family buffers are neither trained nor mixed in
    with db.session() as s:
        regrouped = RunContext(RunRepository(s).create("night", "test").id, "night", db, settings)
    assert with_replay(regrouped, {}, wanted={"ownership", "types", "items"}) == {}
    settings.night.replay_cap = 0
    off, _ = night({"moves": [ex(1)]})
    assert off == {} and len(ReplayBuffer(tmp_path / "replay", 10).load("moves")) == 8
