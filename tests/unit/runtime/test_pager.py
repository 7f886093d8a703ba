from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from controller.runtime.client import Page, list_pages
from controller.runtime.errors import Gone
from controller.runtime.resources import PODS


class Item(dict[str, Any]):
    """A list item that can be weakly referenced: it shows when a page is really gone."""


def item(name: str) -> Item:
    return Item(metadata={"name": name, "namespace": "ns"})


class PagedClient:
    """list() answers with the pages in order (an exception is raised); every call first checks
    that no item of an earlier page is still alive."""

    def __init__(self, *answers: dict[str, Any] | BaseException) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []
        self.handed_out: list[weakref.ref[Item]] = []
        self.alive_at_call: list[int] = []

    async def list(self, resource: Any, namespace: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        self.alive_at_call.append(sum(r() is not None for r in self.handed_out))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        self.handed_out += [weakref.ref(i) for i in answer["items"]]
        return answer


def page(rv: str, *names: str, cont: str | None = None) -> dict[str, Any]:
    meta = {"resourceVersion": rv, **({"continue": cont} if cont else {})}
    return {"metadata": meta, "items": [item(n) for n in names]}


def names(p: Page) -> list[str]:
    return [i["metadata"]["name"] for i in p.items]


async def test_pages_one_at_a_time_and_none_is_kept() -> None:
    client = PagedClient(page("5", "a", "b", cont="c1"), page("6", "c", "d", cont="c2"), page("7", "e"))
    seen = []
    async for p in list_pages(client, PODS, "ns", label_selector="x=y", page_size=2):  # type: ignore[arg-type]
        seen.append((names(p), p.resource_version, p.restart))
        del p  # the consumer drops the page before asking for the next one
    assert seen == [(["a", "b"], "5", False), (["c", "d"], "6", False), (["e"], "7", False)]
    assert [c["continue_token"] for c in client.calls] == [None, "c1", "c2"]
    assert all(c["limit"] == 2 and c["label_selector"] == "x=y" for c in client.calls)
    # When the next page is requested, nothing of the previous one is alive any more.
    assert client.alive_at_call == [0, 0, 0]


async def test_an_expired_continue_token_restarts_with_one_full_list() -> None:
    client = PagedClient(
        page("5", "a", cont="c1"),
        Gone(code=410, reason="Expired", message="continue expired"),
        page("9", "b", "c"),
    )
    pages = [p async for p in list_pages(client, PODS, "ns", page_size=1)]  # type: ignore[arg-type]
    assert [(names(p), p.resource_version, p.restart) for p in pages] == [
        (["a"], "5", False),
        (["b", "c"], "9", True),
    ]
    assert client.calls[2].get("limit") is None and client.calls[2].get("continue_token") is None


async def test_gone_on_the_first_page_is_the_callers() -> None:
    client = PagedClient(Gone(code=410, reason="Expired", message="too old"))
    with pytest.raises(Gone):
        [p async for p in list_pages(client, PODS, "ns")]  # type: ignore[arg-type]


class LazyPagedClient(PagedClient):
    """A client with list_lazily (as ApiClient has): each page's items come from an iterator
    that makes them one at a time; `made` records how many were made when each one is taken."""

    def __init__(self, *answers: dict[str, Any] | BaseException) -> None:
        super().__init__(*answers)
        self.made = 0
        self.made_when_taken: list[int] = []

    async def list(self, resource: Any, namespace: Any = None, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("list_pages must use list_lazily when the client has it")

    async def list_lazily(
        self, resource: Any, namespace: Any = None, **kwargs: Any
    ) -> tuple[dict[str, Any], Iterator[Item]]:
        answer = await super().list(resource, namespace, **kwargs)
        names = [i["metadata"]["name"] for i in answer["items"]]
        self.handed_out.clear()
        return {"metadata": answer["metadata"], "items": []}, self._make(names)

    def _make(self, names: Sequence[str]) -> Iterator[Item]:
        for name in names:
            made = item(name)
            self.made += 1
            self.handed_out.append(weakref.ref(made))
            self.made_when_taken.append(self.made)
            yield made
            del made


async def test_a_lazy_client_pages_items_as_they_are_taken() -> None:
    client = LazyPagedClient(page("5", "a", "b", cont="c1"), page("6", "c"))
    seen = []
    async for p in list_pages(client, PODS, "ns", page_size=2):  # type: ignore[arg-type]
        for i in p.items:
            # Only the item taken exists: the previous one is gone, the next not made yet.
            assert sum(r() is not None for r in client.handed_out) == 1
            seen.append(i["metadata"]["name"])
            del i
        seen.append(p.resource_version)
        del p
    assert seen == ["a", "b", "5", "c", "6"]
    assert client.made_when_taken == [1, 2, 3]
    assert [c["continue_token"] for c in client.calls] == [None, "c1"]
