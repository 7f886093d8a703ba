"""A RoleSet controller on a FakeClient with real informers, for sync-logic unit tests."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.roleset import labels as L
from controller.roleset.controller import RoleSetController
from controller.roleset.podcontrol import KubeObjectControl
from controller.roleset.sync import SyncConfig
from controller.runtime.client import Obj
from controller.runtime.fake import FakeClient
from controller.runtime.informer import InformerFactory
from controller.runtime.resources import PODS, ROLESETS

NS = "ns"


@dataclass
class Recorded:
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]


def role(
    name: str,
    replicas: int = 2,
    image: str = "img:1",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": replicas,
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "main", "image": image}]},
        },
        **extra,
    }


def roleset(name: str = "rs", roles: list[dict[str, Any]] | None = None, **spec: Any) -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {"name": name, "namespace": NS, "labels": {L.STORM_SERVICE_NAME_LABEL: "ss"}},
        "spec": {"roles": roles if roles is not None else [role("worker")], **spec},
    }


class Harness:
    def __init__(self, config: SyncConfig | None = None, *, client: FakeClient | None = None) -> None:
        # Passing the client of an earlier harness is a controller restart: same cluster, new
        # process memory.
        self.client = client or FakeClient()
        # Discovery polled often: tests install and remove PodGroup CRDs on the fake.
        self.factory = InformerFactory(self.client, discovery_interval=0.02)
        self.recorder = Recorded()
        self.ctrl = RoleSetController(
            informers=self.factory,
            control=KubeObjectControl(self.client),
            recorder=self.recorder,
            config=config,
        )

    async def start(self) -> None:
        self.factory.start()
        # Twice: a PodGroup informer added during the first wait (its CRD was listed) is not
        # part of that wait's snapshot.
        assert await self.factory.wait_for_sync(timeout=5) or await self.factory.wait_for_sync(timeout=5)

    async def stop(self) -> None:
        await self.factory.stop()

    async def until(self, cond: Callable[[], bool], within: float = 3.0) -> None:
        async with asyncio.timeout(within):
            while not cond():  # noqa: ASYNC110 (polls state owned by the informer tasks)
                await asyncio.sleep(0.001)

    async def settle(self) -> None:
        """Let the informers catch up with everything the fake has."""
        await self.until(self._caught_up)
        for _ in range(3):
            await asyncio.sleep(0)

    def _caught_up(self) -> bool:
        # The pod informer selects on the roleset-name label.
        pods = {
            p["metadata"]["name"]: p["metadata"]["resourceVersion"]
            for p in self.client.objects(PODS, NS)
            if L.ROLESET_NAME_LABEL in (p["metadata"].get("labels") or {})
        }
        cached = {
            p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in self.ctrl.pods.store.list()
        }
        rss = {
            r["metadata"]["name"]: r["metadata"]["resourceVersion"] for r in self.client.objects(ROLESETS, NS)
        }
        cached_rs = {
            r["metadata"]["name"]: r["metadata"]["resourceVersion"] for r in self.ctrl.rolesets.store.list()
        }
        for informer in self.ctrl.pod_group_informers.values():
            if not informer.has_synced():
                return False
            # The informer selects on the roleset-name label.
            stored = {
                p["metadata"]["name"]: p["metadata"]["resourceVersion"]
                for p in self.client.objects(informer.resource, NS)
                if L.ROLESET_NAME_LABEL in (p["metadata"].get("labels") or {})
            }
            cached_pg = {
                p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in informer.store.list()
            }
            if stored != cached_pg:
                return False
        return pods == cached and rss == cached_rs

    async def sync(self, name: str = "rs", *, settle: bool = True) -> float | None:
        if settle:
            await self.settle()
        return await self.ctrl.sync(f"{NS}/{name}")

    async def converge(self, name: str = "rs", rounds: int = 30, ready: bool = True) -> None:
        """Sync until nothing is written, marking new pods ready (as kwok would) between passes."""
        for _ in range(rounds):
            before = len(self.client.writes())
            if ready:
                self.mark_all_ready()
            await self.sync(name)
            if len(self.client.writes()) == before:
                return
        raise AssertionError("did not converge")

    def create(self, obj: Obj) -> Obj:
        return self.client.seed(ROLESETS, obj)

    def get(self, name: str = "rs") -> Obj:
        obj = self.client.get_object(ROLESETS, NS, name)
        assert obj is not None
        return obj

    def update_spec(self, mutate: Callable[[Obj], None], name: str = "rs") -> None:
        obj = self.get(name)
        mutate(obj["spec"])
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        self.client.seed(ROLESETS, obj)

    def pods(self, role_name: str | None = None, *, live: bool = True) -> list[Obj]:
        out = []
        for p in self.client.objects(PODS, NS):
            if role_name is not None and L.labels_of(p).get(L.ROLE_NAME_LABEL) != role_name:
                continue
            if live and p["metadata"].get("deletionTimestamp"):
                continue
            out.append(p)
        return out

    def set_ready(self, pod: Obj, ready: bool = True, image_id: str | None = None) -> None:
        status = copy.deepcopy(pod.get("status") or {})
        status["phase"] = "Running"
        conds = [
            c for c in status.get("conditions") or [] if c.get("type") not in ("Ready", "ContainersReady")
        ]
        conds += [
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
        ]
        status["conditions"] = conds
        cs = []
        for c in pod["spec"]["containers"]:
            prev: dict[str, Any] = next(
                (s for s in status.get("containerStatuses") or [] if s["name"] == c["name"]), {}
            )
            cs.append(
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": image_id or prev.get("imageID") or f"id-{c['image']}",
                    "ready": ready,
                }
            )
        status["containerStatuses"] = cs
        self.client.set_status(PODS, NS, pod["metadata"]["name"], status)

    def mark_all_ready(self) -> None:
        for p in self.pods():
            st = p.get("status") or {}
            if st.get("phase") != "Running":
                self.set_ready(p)

    def condition(self, type_: str, name: str = "rs") -> dict[str, Any] | None:
        for c in (self.get(name).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return None
