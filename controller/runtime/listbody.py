"""The items of a list response, decoded one at a time from its body.

Why: a decoded page of 100 realistic pods is ~10 MB of small Python objects, while its slimmed
form is ~0.7 MB. pymalloc returns memory to the OS only by whole 1 MiB arenas, and orjson keeps
(in its key cache) key strings of the page that never repeat (managedFields' `k:{"ip":...}`), one
here and there in every arena the page filled; so a decoded page's arenas stay mapped for good,
and the process keeps the page's size on top of its cache (~10 KiB per pod at 1,000 pods). An
item decoded alone and slimmed before the next one is decoded leaves at most one item of garbage,
which the next item reuses.

How: the API server writes a list compactly, as `{...,"items":[ITEM,ITEM,...]...}`, each item an
object starting with the same key (`"metadata"` for built-in kinds, `"apiVersion"` for custom
resources). The body is cut before every `},{"<that key>":`. Such a cut can also fall inside an
item (an array of objects starting with that key); the bytes up to it are then not a JSON value,
so a chunk that does not decode is joined to the next one. A chunk that decodes is a whole item:
a proper prefix of an object never decodes. Anything else (no items array, pretty-printed JSON, a
wrong first guess more than `MAX_FALSE_CUTS` times in one item) falls back to decoding the whole
body, which is what a client without this module does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

_ITEMS = b'"items":['

# Cuts inside one item tried before decoding the whole body instead: each retry decodes the
# item's bytes so far again.
MAX_FALSE_CUTS = 8


def split_list(
    body: bytes, decode_whole: Callable[[bytes], Any] = orjson.loads
) -> tuple[dict[str, Any], Iterator[Any]]:
    """The list without its items (`"items": []`), and an iterator decoding its items one by one.
    `decode_whole` decodes the whole body when its items are not recognised. Raises
    orjson.JSONDecodeError when the body is not JSON, as decoding it whole would; with a body
    whose items are recognised, the error of a malformed item comes from the iterator."""
    start = body.find(_ITEMS)
    end = body.rfind(b"]")
    if start >= 0 and start + len(_ITEMS) <= end:
        first = start + len(_ITEMS)
        try:
            envelope = orjson.loads(body[:first] + body[end:])
        except orjson.JSONDecodeError:
            envelope = None
        if isinstance(envelope, dict) and envelope.get("items") == []:
            if first == end:
                return envelope, iter(())
            colon = body.find(b":", first, end)
            if body[first : first + 2] == b'{"' and colon > 0:
                return envelope, _items(body, first, end, b"}," + body[first : colon + 1], decode_whole)
    whole = decode_whole(body)
    items = whole.get("items") if isinstance(whole, dict) else None
    if not isinstance(whole, dict) or not isinstance(items, list):
        raise orjson.JSONDecodeError("not a list: no items array", body[:64].decode(errors="replace"), 0)
    whole["items"] = []
    return whole, iter(items)


def _items(
    body: bytes, start: int, end: int, cut_before: bytes, decode_whole: Callable[[bytes], Any]
) -> Iterator[Any]:
    view = memoryview(body)
    given = 0
    while start < end:
        item, stop = _next_item(body, view, start, end, cut_before)
        if stop < 0:
            break
        yield item
        del item  # not held while the consumer asks for the next one
        given += 1
        start = stop + 1  # past the comma
    else:
        return
    # Not laid out as expected after all: the whole body, minus the items already given.
    view.release()
    yield from decode_whole(body)["items"][given:]


def _next_item(body: bytes, view: memoryview, start: int, end: int, cut_before: bytes) -> tuple[Any, int]:
    """The item starting at `start` and the index right after it; (None, -1) if not found."""
    cut = body.find(cut_before, start, end)
    for _ in range(MAX_FALSE_CUTS + 1):
        stop = end if cut < 0 else cut + 1
        try:
            return orjson.loads(view[start:stop]), stop
        except orjson.JSONDecodeError:
            if cut < 0:
                break
            cut = body.find(cut_before, cut + 1, end)
    return None, -1
