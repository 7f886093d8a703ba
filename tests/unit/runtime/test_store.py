from __future__ import annotations

from typing import Any

import pytest

from controller.runtime.client import Obj
from controller.runtime.store import (
    INDEX_CONTROLLER_UID,
    INDEX_NAMESPACE,
    Store,
    controller_uid_index,
    strip_object,
)


def pod(name: str, ns: str = "ns", owner: str | None = None, controller: bool = True, **labels: str) -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "controller": controller, "kind": "RoleSet", "name": "rs"}]
    return {"metadata": meta}


def by_role(obj: Obj) -> list[str]:
    role = obj["metadata"].get("labels", {}).get("role")
    return [role] if role else []


def names(objs: list[Obj]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def test_add_get_list_delete() -> None:
    store = Store()
    store.add(pod("a"))
    store.add(pod("b", ns="other"))
    assert store.get("ns/a") is not None
    assert store.get("ns/b") is None
    assert sorted(store.keys()) == ["ns/a", "other/b"]
    assert names(store.list()) == ["a", "b"]
    assert len(store) == 2 and "other/b" in store
    removed = store.delete("ns/a")
    assert removed is not None and removed["metadata"]["name"] == "a"
    assert store.delete(pod("missing")) is None
    assert store.keys() == ["other/b"]


def test_cluster_scoped_key() -> None:
    store = Store()
    store.add({"metadata": {"name": "node-1"}})
    assert store.get("node-1") is not None
    assert store.index_keys(INDEX_NAMESPACE, "") == ["node-1"]


def test_builtin_indexes_follow_updates_and_deletes() -> None:
    store = Store()
    store.add(pod("a", owner="u1"))
    store.add(pod("b", owner="u1"))
    store.add(pod("c", owner="u2", controller=False))  # not a controller reference
    store.add(pod("d", ns="other"))
    assert names(store.by_index(INDEX_CONTROLLER_UID, "u1")) == ["a", "b"]
    assert store.by_index(INDEX_CONTROLLER_UID, "u2") == []
    assert sorted(store.index_keys(INDEX_NAMESPACE, "ns")) == ["ns/a", "ns/b", "ns/c"]

    store.update(pod("b", owner="u3"))  # adopted by another owner
    assert names(store.by_index(INDEX_CONTROLLER_UID, "u1")) == ["a"]
    assert names(store.by_index(INDEX_CONTROLLER_UID, "u3")) == ["b"]

    store.delete(pod("a"))
    assert store.by_index(INDEX_CONTROLLER_UID, "u1") == []
    assert "u1" not in store.index_values(INDEX_CONTROLLER_UID)  # empty buckets are dropped


def test_custom_indexer_added_after_items() -> None:
    store = Store()
    store.add(pod("a", role="prefill"))
    store.add(pod("b", role="decode"))
    store.add_indexers({"role": by_role})
    assert names(store.by_index("role", "prefill")) == ["a"]
    store.update(pod("a", role="decode"))
    assert names(store.by_index("role", "decode")) == ["a", "b"]
    assert store.by_index("role", "prefill") == []
    store.add_indexers({"role": by_role})  # the same function again: no-op
    with pytest.raises(ValueError):
        store.add_indexers({"role": lambda obj: []})


def test_unknown_index_raises() -> None:
    with pytest.raises(KeyError):
        Store().by_index("nope", "x")


def test_replace_rebuilds_indexes_and_returns_old() -> None:
    store = Store({"role": by_role})
    store.add(pod("a", owner="u1", role="prefill"))
    store.add(pod("b", owner="u1"))
    old = store.replace([pod("b", owner="u2"), pod("c", role="prefill")], "42")
    assert sorted(old) == ["ns/a", "ns/b"]
    assert store.resource_version == "42"
    assert sorted(store.keys()) == ["ns/b", "ns/c"]
    assert store.by_index(INDEX_CONTROLLER_UID, "u1") == []
    assert names(store.by_index(INDEX_CONTROLLER_UID, "u2")) == ["b"]
    assert names(store.by_index("role", "prefill")) == ["c"]


def test_strip_object_drops_managed_fields_only() -> None:
    obj: Obj = {
        "metadata": {
            "name": "a",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": {"x": 1},
    }
    slim = strip_object(obj)
    assert "managedFields" not in slim["metadata"]
    assert slim["metadata"]["annotations"] == obj["metadata"]["annotations"]
    assert slim["spec"] is obj["spec"]
    assert "managedFields" in obj["metadata"]  # the input is untouched
    plain: Obj = {"metadata": {"name": "b"}}
    assert strip_object(plain) is plain


def test_controller_uid_index_ignores_malformed_refs() -> None:
    assert controller_uid_index({"metadata": {"ownerReferences": [{"controller": True}]}}) == []
    assert controller_uid_index({"metadata": {}}) == []


def test_one_controller_ref_serves_the_store_and_controllerref() -> None:
    from controller.runtime import controllerref, store

    assert store.controller_ref is controllerref.controller_ref
    cases: list[Obj] = [
        {"metadata": {}},
        {"metadata": {"ownerReferences": [{"uid": "u1", "controller": False}]}},
        {"metadata": {"ownerReferences": [{"uid": "u1"}, {"uid": "u2", "controller": True}]}},
        pod("a", owner="u3"),
    ]
    for obj in cases:
        ref = controllerref.controller_ref(obj)
        assert controller_uid_index(obj) == ([] if ref is None else [ref["uid"]])
