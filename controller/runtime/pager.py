"""A paginated list, one page at a time (client-go's ListPager, as an async iterator).

`list_all` in client.py returns every item at once; an informer's relist must not: it would hold
the raw items of every page next to its old and its new cache. `list_pages` hands out one page's
items and keeps no reference to them once the consumer asks for the next page, so at most one
page of raw items is alive at a time (as long as the consumer drops it too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from controller.runtime.client import KubeClient, Obj
from controller.runtime.errors import Gone
from controller.runtime.resources import Resource


@dataclass(slots=True)
class Page:
    items: list[Obj]
    # The list's resourceVersion so far (the one of the last page is the list's).
    resource_version: str
    # The continue token expired half-way and this page is a complete, unpaginated list:
    # forget the items of the pages before it.
    restart: bool = False


async def list_pages(
    client: KubeClient,
    resource: Resource,
    namespace: str | None = None,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    page_size: int = 500,
) -> AsyncIterator[Page]:
    """The pages of a list, following `continue`. If the continue token expires half-way (410),
    the last page is one unpaginated list of everything, with `restart` set, as client-go's pager
    falls back to a full list."""
    continue_token: str | None = None
    resource_version = ""
    while True:
        try:
            body = await client.list(
                resource,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=page_size if page_size > 0 else None,
                continue_token=continue_token,
            )
        except Gone:
            if continue_token is None:
                raise
            body = await client.list(
                resource, namespace, label_selector=label_selector, field_selector=field_selector
            )
            meta = body.get("metadata") or {}
            page = Page(list(body.get("items") or []), str(meta.get("resourceVersion") or ""), restart=True)
            del body, meta
            yield page
            return
        meta = body.get("metadata") or {}
        resource_version = str(meta.get("resourceVersion") or resource_version)
        continue_token = meta.get("continue") or None
        page = Page(body.get("items") or [], resource_version)
        # Nothing of this page may be held here across the next request: body and meta go now,
        # the page as soon as the consumer asks for the next one.
        del body, meta
        yield page
        del page
        if not continue_token:
            return
