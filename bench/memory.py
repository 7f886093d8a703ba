"""Memory of the pod informer's cache, measured as RSS, in a fresh process per measurement.

The parent writes the list pages of N realistic pods (bench/pods.py) to files; a child process
(`python -m bench.memory child ...`) runs the informer of the RoleSet controller (label selector,
indexes, an event handler) against a client that reads one page file per list call, as the real
client reads one HTTP body per page, and reports:

- per pod: (RSS once the informer listed N pods - RSS with the informer synced on an empty
  list) / N;
- relist peak: VmHWM during a relist (a 410 on the watch) of the same N pods over the warm
  cache, minus the empty baseline, divided by the steady state (RSS with N pods - the baseline);
  and the same for a relist in which every pod has a new resourceVersion;
- the CPU time of the first list of N pods (decode, slim, index, handlers).

VmHWM is reset right before each relist through /proc/self/clear_refs, so that an earlier peak
does not hide the relist's.

    python -m bench.memory run 1000 10000     # the figures `make bench` checks, as JSON lines
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from bench.pods import list_pages
from controller.roleset import adoption
from controller.roleset import labels as L
from controller.runtime.client import decode_json
from controller.runtime.errors import Gone
from controller.runtime.informer import FuncHandler, Informer
from controller.runtime.listbody import split_list
from controller.runtime.resources import PODS

# The informer's own page size: the pages on disk are the pages it asks for.
PAGE_SIZE: int = inspect.signature(Informer).parameters["page_size"].default


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def hwm_kib() -> int:
    with open("/proc/self/status") as f:
        match = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def write_pages(directory: Path, n: int) -> None:
    for k, page in enumerate(list_pages(n, PAGE_SIZE)):
        (directory / f"{k}.json").write_bytes(page)


class PageClient:
    """Serves the first `pods` pods of the page files, one file per list call; the watch stays
    open until `expire()`, then fails with 410 Gone, which makes the informer relist."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pods = 0
        self.bump_rv = False  # serve every pod with a new resourceVersion (all changed)
        self._expire = asyncio.Event()

    def expire(self) -> None:
        self._expire.set()

    async def list(self, resource: Any, namespace: Any = None, **kwargs: Any) -> dict[str, Any]:
        page, items = await self.list_lazily(resource, namespace, **kwargs)
        page["items"] = list(items)
        return page

    async def list_lazily(
        self,
        resource: Any,
        namespace: Any = None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        **_: Any,
    ) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
        """What ApiClient.list_lazily does with a response body: the page without its items,
        and the items decoded one at a time."""
        assert limit == PAGE_SIZE, limit
        if self.pods == 0:
            return {"metadata": {"resourceVersion": "1"}, "items": []}, iter(())
        k = int(continue_token.removeprefix("page-")) if continue_token else 0
        page, items = split_list((self.directory / f"{k}.json").read_bytes(), decode_json)
        if (k + 1) * PAGE_SIZE >= self.pods:
            items = itertools.islice(items, self.pods - k * PAGE_SIZE)
            page["metadata"].pop("continue", None)
        return page, self._as_client_gives(items)

    def _as_client_gives(self, items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            # What the real client does to list items.
            item["apiVersion"] = "v1"
            item["kind"] = "Pod"
            if self.bump_rv:
                item["metadata"]["resourceVersion"] += "1"
            yield item
            del item

    async def watch(self, resource: Any, namespace: Any = None, **_: Any) -> AsyncIterator[dict[str, Any]]:
        # A healthy watch first (or the informer backs off before relisting after a second 410).
        yield {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "1"}}}
        await self._expire.wait()
        self._expire.clear()
        raise Gone(code=410, reason="Expired", message="too old resource version")


async def measure(directory: Path, n: int) -> dict[str, float]:
    client = PageClient(directory)
    # As the RoleSet controller sets it up.
    informer = Informer(client, PODS, label_selector=L.ROLESET_NAME_LABEL)  # type: ignore[arg-type]
    informer.store.add_indexers({adoption.INDEX_ROLESET_LABEL: adoption.roleset_label_index})
    events = {"add": 0, "update": 0, "delete": 0}

    def on_add(obj: Any) -> None:
        events["add"] += 1

    def on_update(old: Any, new: Any) -> None:
        events["update"] += 1

    def on_delete(obj: Any) -> None:
        events["delete"] += 1

    informer.add_event_handler(FuncHandler(on_add=on_add, on_update=on_update, on_delete=on_delete))
    task = asyncio.create_task(informer.run())

    async def relisted(lists: int) -> None:
        while informer.lists < lists or not informer.has_synced():  # noqa: ASYNC110 (the informer's counter)
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the informer is back in its watch

    await relisted(1)
    gc.collect()
    empty = rss_kib()

    client.pods = n
    cpu = time.process_time()
    client.expire()
    await relisted(2)
    list_cpu = time.process_time() - cpu
    gc.collect()
    steady = rss_kib()
    assert len(informer.store) == n and events["add"] == n, (len(informer.store), events)

    reset_hwm()
    client.expire()
    await relisted(3)
    peak = hwm_kib()
    assert len(informer.store) == n and events["update"] == n and events["delete"] == 0, events

    reset_hwm()
    client.bump_rv = True
    client.expire()
    await relisted(4)
    peak_changed = hwm_kib()
    assert len(informer.store) == n and events["update"] == 2 * n and events["delete"] == 0, events
    gc.collect()
    after = rss_kib()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "pods": n,
        "page_size": PAGE_SIZE,
        "list_cpu_seconds": list_cpu,
        "empty_kib": empty,
        "steady_kib": steady,
        "relist_peak_kib": peak,
        "relist_changed_peak_kib": peak_changed,
        "after_relists_kib": after,
        "kib_per_pod": (steady - empty) / n,
        "relist_peak_ratio": (peak - empty) / max(1, steady - empty),
        "relist_changed_peak_ratio": (peak_changed - empty) / max(1, steady - empty),
    }


def run_child(directory: Path, n: int) -> dict[str, float]:
    """One measurement in a fresh interpreter, so that no figure inherits another's heap."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "child", "--dir", str(directory), "--pods", str(n)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def measure_all(sizes: list[int]) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        write_pages(Path(tmp), max(sizes))
        return [run_child(Path(tmp), n) for n in sizes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    child = sub.add_parser("child", help="one measurement over existing page files (prints JSON)")
    child.add_argument("--dir", type=Path, required=True)
    child.add_argument("--pods", type=int, required=True)
    run = sub.add_parser("run", help="write the pages, then measure each size in a fresh process")
    run.add_argument("sizes", type=int, nargs="*", default=[1_000, 10_000])
    args = parser.parse_args(argv)
    if args.command == "child":
        import logging

        import structlog

        # The informer's debug lines would be the child's output.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        print(json.dumps(asyncio.run(measure(args.dir, args.pods))))
    else:
        for result in measure_all(args.sizes):
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
