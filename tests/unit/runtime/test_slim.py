from __future__ import annotations

import contextlib
import copy
import pickle
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bench.pods import PodFactory
from controller.runtime.client import Obj
from controller.runtime.slim import (
    CONTAINER_STATUS_FIELDS,
    FrozenDict,
    FrozenList,
    Interner,
    release_free_memory,
    slim,
    slim_pod_status,
)
from tests.unit.cache_guard import recording_cache_writes

FACTORY = PodFactory()


def realistic_pod(i: int) -> Obj:
    """A vLLM pod as the API server sends it (bench/fixtures/vllm-pod.json), the i-th of a
    cluster of them."""
    return FACTORY.pod(i)


def walk(value: Any, path: str = "") -> list[tuple[str, Any]]:
    out = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            out += walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += walk(v, f"{path}[{i}]")
    return out


def test_slim_drops_managed_fields_and_the_pod_status_nobody_reads() -> None:
    pod = realistic_pod(5)
    before = orjson.dumps(pod)
    cached = slim(pod, interner=Interner())
    assert orjson.dumps(pod) == before  # the input is untouched

    assert "managedFields" not in cached["metadata"]
    assert cached["metadata"] == {k: v for k, v in pod["metadata"].items() if k != "managedFields"}
    assert cached["spec"] == pod["spec"]  # the whole spec: the in-place comparison reads it all
    assert set(cached["status"]) == {"phase", "conditions", "containerStatuses"}
    assert cached["status"]["conditions"] == [
        {"type": c["type"], "status": c["status"]} for c in pod["status"]["conditions"]
    ]
    for kept, sent in zip(
        cached["status"]["containerStatuses"], pod["status"]["containerStatuses"], strict=True
    ):
        assert set(kept) == set(CONTAINER_STATUS_FIELDS)
        assert kept["state"] == {"running": {"startedAt": sent["state"]["running"]["startedAt"]}}
        assert {k: kept[k] for k in kept if k != "state"} == {
            k: sent[k] for k in CONTAINER_STATUS_FIELDS if k != "state"
        }


def test_only_pod_status_is_pruned() -> None:
    roleset: Obj = {
        "kind": "RoleSet",
        "metadata": {"name": "rs", "managedFields": [{"manager": "x"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t"}], "x": 1},
    }
    cached = slim(roleset, interner=Interner())
    assert cached == {"kind": "RoleSet", "metadata": {"name": "rs"}, "status": roleset["status"]}
    # List items may carry no kind: the informer passes its resource's.
    pod: Obj = {"metadata": {"name": "p"}, "status": {"phase": "Running", "podIP": "10.0.0.1"}}
    assert slim(pod, "Pod", interner=Interner())["status"] == {"phase": "Running"}
    assert slim(pod, "ConfigMap", interner=Interner())["status"] == pod["status"]


def test_pod_status_keeps_what_the_in_place_update_reads() -> None:
    waiting = {
        "name": "c",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {},
        "ready": False,
    }
    status = slim_pod_status({"phase": "Pending", "containerStatuses": [waiting], "qosClass": "Burstable"})
    assert status == {"phase": "Pending", "containerStatuses": [{"name": "c", "state": {}, "ready": False}]}


def shared_paths(a: Any, b: Any) -> set[str]:
    """Paths of b's dicts and lists that are the very objects somewhere in a."""
    ids = {id(v) for _, v in walk(a) if isinstance(v, (dict, list))}
    return {p for p, v in walk(b) if isinstance(v, (dict, list)) and id(v) in ids}


def test_pods_of_one_template_share_all_that_is_equal() -> None:
    interner = Interner()
    pods = [slim(realistic_pod(i), interner=interner) for i in range(8)]
    # Pods 1 and 5: two RoleSets of one StormService (pod 0 saw every string first: its parts
    # are its own).
    shared = shared_paths(pods[1], pods[5])
    for path in (
        ".spec.tolerations",
        ".spec.affinity",
        ".spec.containers[0].resources",
        ".spec.containers[0].readinessProbe",
        ".spec.containers[0].ports",
        ".spec.containers[0].env[0]",
        ".spec.containers[1].env[11]",
        ".spec.volumes[0]",
        ".status.conditions",
    ):
        assert path in shared, path
    # Pods 2 and 3: the two pods of one group.
    assert ".metadata.annotations" in shared_paths(pods[2], pods[3])
    # What differs per pod is not shared.
    a, b = pods[1], pods[5]
    assert a["spec"] is not b["spec"] and a["spec"]["hostname"] != b["spec"]["hostname"]
    assert ".spec.containers[0].env" not in shared
    # And the pod name is one string, as name and as hostname.
    assert a["metadata"]["name"] is a["spec"]["hostname"]


def test_an_update_reuses_what_it_did_not_change() -> None:
    interner = Interner()
    cached = slim(realistic_pod(3), interner=interner)
    update = realistic_pod(3)
    update["metadata"]["resourceVersion"] = "999999"
    update["status"]["containerStatuses"][0]["restartCount"] = 1
    new = slim(update, old=cached, interner=interner)
    assert new["spec"] is cached["spec"]  # unique to this pod, so found through `old` only
    assert new["metadata"]["labels"] is cached["metadata"]["labels"]
    assert new["status"] is not cached["status"]
    assert new["status"]["containerStatuses"][0]["restartCount"] == 1
    assert new["status"]["containerStatuses"][1] is cached["status"]["containerStatuses"][1]
    assert new["metadata"]["resourceVersion"] == "999999"


@pytest.mark.parametrize("old_value", [True, 1.0])
def test_json_types_are_kept_apart(old_value: Any) -> None:
    """1, 1.0 and true are equal for Python; a cached object must still say what was sent."""
    interner = Interner()
    cached = slim({"kind": "X", "metadata": {"name": "a"}, "spec": {"v": [old_value]}}, interner=interner)
    sent: Obj = {"kind": "X", "metadata": {"name": "a"}, "spec": {"v": [1]}}
    for new in (slim(sent, old=cached, interner=interner), slim(sent, interner=interner)):
        assert orjson.dumps(new) == orjson.dumps(sent)


def write_ops() -> list[tuple[str, Callable[[Any], Any]]]:
    def set_item(d: Any) -> None:
        d["x"] = 1

    def del_item(d: Any) -> None:
        del d["metadata"]

    def ior(d: Any) -> None:
        d |= {"x": 1}

    return [
        ("setitem", set_item),
        ("delitem", del_item),
        ("ior", ior),
        ("clear", lambda d: d.clear()),
        ("pop", lambda d: d.pop("metadata")),
        ("popitem", lambda d: d.popitem()),
        ("setdefault", lambda d: d.setdefault("x", 1)),
        ("update", lambda d: d.update(x=1)),
    ]


def list_write_ops() -> list[tuple[str, Callable[[Any], Any]]]:
    def set_item(v: Any) -> None:
        v[0] = 1

    def del_item(v: Any) -> None:
        del v[0]

    def iadd(v: Any) -> None:
        v += [1]

    def imul(v: Any) -> None:
        v *= 2

    return [
        ("setitem", set_item),
        ("delitem", del_item),
        ("iadd", iadd),
        ("imul", imul),
        ("append", lambda v: v.append(1)),
        ("extend", lambda v: v.extend([1])),
        ("insert", lambda v: v.insert(0, 1)),
        ("pop", lambda v: v.pop()),
        ("remove", lambda v: v.remove(v[0])),
        ("clear", lambda v: v.clear()),
        ("sort", lambda v: v.sort(key=id)),
        ("reverse", lambda v: v.reverse()),
    ]


@pytest.mark.writes_cached_objects
@pytest.mark.parametrize(("name", "op"), write_ops(), ids=[n for n, _ in write_ops()])
def test_cached_dicts_refuse_every_write(name: str, op: Callable[[Any], Any]) -> None:
    cached = slim(realistic_pod(0), interner=Interner())
    for target in (cached, cached["spec"], cached["spec"]["containers"][0]["resources"]):
        if name in ("pop", "delitem") and "metadata" not in target:
            continue
        before = orjson.dumps(target)
        with pytest.raises(TypeError, match="read-only"):
            op(target)
        assert orjson.dumps(target) == before


@pytest.mark.writes_cached_objects
@pytest.mark.parametrize(("name", "op"), list_write_ops(), ids=[n for n, _ in list_write_ops()])
def test_cached_lists_refuse_every_write(name: str, op: Callable[[Any], Any]) -> None:
    cached = slim(realistic_pod(0), interner=Interner())
    for target in (cached["spec"]["containers"], cached["spec"]["containers"][0]["env"]):
        before = orjson.dumps(target)
        with pytest.raises(TypeError, match="read-only"):
            op(target)
        assert orjson.dumps(target) == before


def test_every_mutator_is_refused() -> None:
    """FrozenDict and FrozenList override every mutating method of dict and list (and the unit
    tests' guard watches exactly those)."""
    mutating = {
        dict: {"__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault", "update"},
        list: {
            "__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert",
            "pop", "remove", "clear", "sort", "reverse",
        },
    }  # fmt: skip
    for frozen, base in ((FrozenDict, dict), (FrozenList, list)):
        assert set(frozen.MUTATORS) == mutating[base]
        for name in frozen.MUTATORS:
            assert getattr(frozen, name) is not getattr(base, name)


def test_copies_are_plain_and_mutable() -> None:
    cached = slim(realistic_pod(2), interner=Interner())
    deep = copy.deepcopy(cached)
    assert deep == cached
    for _, value in walk(deep):
        assert type(value) not in (FrozenDict, FrozenList)
    deep["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})  # a copy is ours
    assert len(cached["spec"]["containers"][0]["env"]) + 1 == len(deep["spec"]["containers"][0]["env"])
    for shallow in (dict(cached), cached.copy(), {**cached}, copy.copy(cached), cached | {}):
        assert type(shallow) is dict and shallow == cached
        shallow["metadata"] = {}
    assert type(copy.copy(cached["spec"]["containers"])) is list
    assert type(list(cached["spec"]["containers"])) is list
    unpickled = pickle.loads(pickle.dumps(cached))
    assert unpickled == cached and type(unpickled) is dict and type(unpickled["spec"]) is dict
    # Nested plain dicts holding cached parts deep-copy into plain dicts too.
    outer = {"spec": cached["spec"]}
    assert type(copy.deepcopy(outer)["spec"]["containers"]) is list


def test_cached_objects_encode_and_compare_as_plain_json() -> None:
    pod = realistic_pod(4)
    cached = slim(pod, interner=Interner())
    plain = orjson.loads(orjson.dumps(cached))
    assert cached == plain and plain == cached
    assert orjson.dumps(cached, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        plain, option=orjson.OPT_SORT_KEYS
    )
    assert isinstance(cached, dict) and isinstance(cached["spec"]["containers"], list)


def test_sweep_drops_only_what_nothing_else_uses() -> None:
    interner = Interner()
    kept = [slim(realistic_pod(i), interner=interner) for i in range(3)]
    dropped = [slim(realistic_pod(i), interner=interner) for i in range(250, 253)]  # another template
    size = len(interner)
    del dropped
    assert interner.sweep() > 0
    assert 0 < len(interner) < size
    assert interner.sweep() == 0  # what is left is in use
    # What is still in use is still shared.
    again = slim(realistic_pod(3), interner=interner)
    assert again["spec"]["tolerations"] is kept[1]["spec"]["tolerations"]
    assert again["spec"]["containers"][0]["env"][0] is kept[2]["spec"]["containers"][0]["env"][0]


@pytest.mark.writes_cached_objects
def test_the_unit_tests_guard_records_caught_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the autouse guard of tests/unit/conftest.py fails a test on: a write into a cached
    object, even one its author caught."""
    cached = slim(realistic_pod(0), interner=Interner())
    with recording_cache_writes(monkeypatch) as writes:
        with contextlib.suppress(TypeError):
            cached["spec"]["containers"][0]["env"].append({"name": "X"})
        plain = copy.deepcopy(cached)
        plain["spec"]["containers"][0]["env"].append({"name": "X"})  # a copy: allowed
    assert len(writes) == 1 and writes[0].startswith("FrozenList.append")


def test_release_free_memory_is_safe_to_call() -> None:
    release_free_memory()  # glibc's malloc_trim, or nothing where there is none
