from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from controller.runtime import listbody
from controller.runtime.listbody import split_list


def pod(name: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": {"containers": [{"name": "c"}]}, **extra}


def cr(name: str) -> dict[str, Any]:
    # Custom resources come with apiVersion first, and so do their owner references: a list of
    # objects inside the item that starts with the key items start with.
    return {
        "apiVersion": "x.io/v1",
        "kind": "Thing",
        "metadata": {
            "name": name,
            "ownerReferences": [
                {"apiVersion": "x.io/v1", "kind": "Owner", "name": "o1"},
                {"apiVersion": "x.io/v1", "kind": "Owner", "name": "o2"},
            ],
        },
    }


def podlist(items: list[Any], **meta: str) -> dict[str, Any]:
    # Built-in kinds: kind, apiVersion, metadata, then items (Go struct order).
    return {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "5", **meta},
        "items": items,
    }


def crlist(items: list[Any]) -> dict[str, Any]:
    # Custom resources: map keys in sorted order, so items is not last.
    return {
        "apiVersion": "x.io/v1",
        "items": items,
        "kind": "ThingList",
        "metadata": {"resourceVersion": "6"},
    }


# (name, body as the API server sends it, items split one by one rather than decoded whole)
CASES: list[tuple[str, bytes, bool]] = [
    ("pods", orjson.dumps(podlist([pod("a"), pod("b"), pod("c")], **{"continue": "t1"})), True),
    ("one pod", orjson.dumps(podlist([pod("a")])), True),
    ("no items", orjson.dumps(podlist([])), True),
    ("custom resources, items not last", orjson.dumps(crlist([cr("a"), cr("b")])), True),
    (
        # `},{"metadata":` inside an item (volume claim templates, nested three deep): cut there,
        # the chunk does not decode and is joined to the next one.
        "a cut inside an item",
        orjson.dumps(podlist([pod("a", extra=[{"metadata": {"i": i}} for i in range(3)]), pod("b")])),
        True,
    ),
    (
        "strings that look like the layout",
        orjson.dumps(podlist([pod('},{"metadata":'), pod('"items":[')])),
        True,
    ),
    ("empty objects as items", orjson.dumps({"items": [{}, {}]}), False),
    ("pretty-printed", json.dumps(podlist([pod("a"), pod("b")]), indent=2).encode(), False),
    ("spaces after commas", json.dumps(podlist([pod("a"), pod("b")])).encode(), False),
    ("items of other types", orjson.dumps({"items": [1, "x", None]}), False),
]


@pytest.mark.parametrize(("body", "split"), [(b, s) for _, b, s in CASES], ids=[c[0] for c in CASES])
def test_items_and_the_list_are_what_decoding_the_whole_body_gives(body: bytes, split: bool) -> None:
    whole = orjson.loads(body)
    decoded_whole: list[bytes] = []

    def decode_whole(raw: bytes) -> Any:
        decoded_whole.append(raw)
        return orjson.loads(raw)

    envelope, items = split_list(body, decode_whole)
    assert list(items) == whole["items"]
    assert envelope == {**whole, "items": []}
    assert list(envelope) == list(whole)  # same key order
    assert decoded_whole == ([] if split else [body])


def test_too_many_wrong_cuts_in_one_item_decode_the_whole_body() -> None:
    nested = [{"metadata": {"i": i}} for i in range(listbody.MAX_FALSE_CUTS + 2)]
    body = orjson.dumps(podlist([pod("a"), pod("b", extra=nested), pod("c")]))
    decoded_whole = []

    def decode_whole(raw: bytes) -> Any:
        decoded_whole.append(raw)
        return orjson.loads(raw)

    _, items = split_list(body, decode_whole)
    first = next(items)
    assert first == pod("a") and not decoded_whole  # item by item until the nested array
    assert list(items) == [pod("b", extra=nested), pod("c")]
    assert decoded_whole == [body]


def test_items_are_decoded_as_they_are_taken() -> None:
    """The second item is not decoded before the first is taken: a malformed second item fails
    the second step, not the split or the first."""
    body = orjson.dumps(podlist([pod("a"), pod("b")])).replace(b'"name":"b"', b'"name":b"')
    envelope, items = split_list(body)
    assert envelope["metadata"] == {"resourceVersion": "5"}
    assert next(items) == pod("a")
    with pytest.raises(orjson.JSONDecodeError):
        next(items)


@pytest.mark.parametrize("body", [b"", b"not json", b'{"items":[', b"[1,2]", b'{"kind":"Status"}'])
def test_a_body_that_is_not_a_list_raises_a_decode_error(body: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        _, items = split_list(body)
        list(items)


def random_value(rng: random.Random, depth: int) -> Any:
    pick = rng.randrange(8 if depth < 4 else 4)
    if pick == 0:
        return rng.choice(["metadata", "apiVersion", '},{"metadata":', "]", "[", "\\", '"', "é", ""])
    if pick == 1:
        return rng.randrange(-5, 10**6)
    if pick == 2:
        return rng.choice([True, False, None, 1.5])
    if pick == 3:
        return "x" * rng.randrange(3)
    if pick in (4, 5):
        return random_object(rng, depth + 1)
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def random_object(rng: random.Random, depth: int) -> dict[str, Any]:
    keys = rng.sample(["metadata", "apiVersion", "spec", "items", "a"], rng.randrange(4))
    return {k: random_value(rng, depth + 1) for k in keys}


@pytest.mark.parametrize("seed", range(200))
def test_random_lists_split_as_decoding_the_whole_body(seed: int) -> None:
    rng = random.Random(seed)
    first_key = rng.choice(["metadata", "apiVersion"])
    items = [{first_key: random_value(rng, 1), **random_object(rng, 1)} for _ in range(rng.randrange(6))]
    body = orjson.dumps(podlist(items) if rng.random() < 0.5 else crlist(items))
    envelope, split = split_list(body)
    assert list(split) == orjson.loads(body)["items"]
    assert envelope["items"] == []
