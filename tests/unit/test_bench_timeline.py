"""The pure part of bench/timeline.py: the steps between watch observations, per owner."""

from __future__ import annotations

from typing import Any

import pytest

from bench.timeline import Recorder, percentiles, steps


def _obj(name: str, owner: str | None = None, node: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{"name": owner, "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}}


def _see(rec: Recorder, at: float, kind: str, obj: dict[str, Any], ready: bool = False) -> None:
    rec.start = -at  # see() records now - start; monotonic() is ~0 next to these offsets
    rec.see(kind, obj, ready)


def test_steps_follow_a_stormservice_down_to_its_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.timeline.time.monotonic", lambda: 0.0)
    rec = Recorder(0.0)
    _see(rec, 0.0, "StormService", _obj("s"))
    _see(rec, 1.0, "RoleSet", _obj("rs", owner="s"))
    _see(rec, 1.5, "pod", _obj("p1", owner="rs"))
    _see(rec, 2.0, "pod", _obj("p2", owner="rs"))
    _see(rec, 2.5, "pod", _obj("p1", owner="rs", node="n"))
    _see(rec, 3.0, "pod", _obj("p2", owner="rs", node="n"))
    _see(rec, 4.0, "pod", _obj("p1", owner="rs", node="n"), ready=True)
    _see(rec, 6.0, "pod", _obj("p2", owner="rs", node="n"), ready=True)
    _see(rec, 6.5, "RoleSet", _obj("rs", owner="s"), ready=True)
    _see(rec, 7.0, "StormService", _obj("s"), ready=True)
    got = {k: v[0] for k, v in steps(rec, "StormService", "RoleSet").items()}
    assert got == {
        "1 StormService created -> RoleSet created": 1.0,
        "2 group created -> first pod": 0.5,
        "3 first pod -> last pod": 0.5,
        "3a pod created -> scheduled (slowest)": 1.0,
        "3b pod scheduled -> Ready (slowest)": 3.0,
        "4 last pod -> last pod Ready": 4.0,
        "5 last pod Ready -> RoleSet Ready": 0.5,
        "6 RoleSet Ready -> StormService Ready": 0.5,
        "9 StormService Ready, since the start": 7.0,
    }


def test_an_owner_not_yet_ready_gives_only_the_steps_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.timeline.time.monotonic", lambda: 0.0)
    rec = Recorder(0.0)
    _see(rec, 0.0, "ReplicaSet", _obj("r"))
    _see(rec, 0.5, "pod", _obj("p", owner="r"))
    got = steps(rec, "ReplicaSet", None)
    assert sorted(got) == ["2 group created -> first pod", "3 first pod -> last pod"]


def test_percentiles() -> None:
    assert percentiles([3.0, 1.0, 2.0, 4.0]) == "p0   1.00  p50   3.00  p90   4.00  max   4.00"
