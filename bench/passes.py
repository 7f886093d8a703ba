"""CPU of a RoleSet pass that finds nothing to do: the pass each pod status event brings while
pods become Ready (S1 of `make bench-scale` makes thousands). A RoleSet of 2 roles x 10 ready
pods on the in-memory FakeClient with the real informers, store and controller."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from controller.roleset import labels as L
from controller.roleset.controller import RoleSetController
from controller.roleset.podcontrol import KubeObjectControl
from controller.runtime.client import Obj
from controller.runtime.fake import FakeClient
from controller.runtime.informer import InformerFactory
from controller.runtime.resources import PODS, ROLESETS

NS = "bench"


class _Events:
    def event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        pass


def _roleset(pods_per_role: int) -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {"name": "rs", "namespace": NS, "labels": {L.STORM_SERVICE_NAME_LABEL: "ss"}},
        "spec": {
            "roles": [
                {
                    "name": name,
                    "replicas": pods_per_role,
                    "template": {"spec": {"containers": [{"name": "main", "image": f"{name}:1"}]}},
                }
                for name in ("prefill", "decode")
            ]
        },
    }


def _ready(client: FakeClient) -> None:
    for pod in client.objects(PODS, NS):
        if (pod.get("status") or {}).get("phase") == "Running":
            continue
        status = {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
            ],
            "containerStatuses": [
                {"name": c["name"], "image": c["image"], "imageID": f"id-{c['image']}", "ready": True}
                for c in pod["spec"]["containers"]
            ],
        }
        client.set_status(PODS, NS, pod["metadata"]["name"], status)


async def roleset_pass_cpu_us(pods_per_role: int = 10, passes: int = 500) -> float:
    """Median CPU microseconds of a pass over a converged RoleSet (5 rounds of `passes`)."""
    client = FakeClient()
    factory = InformerFactory(client)
    ctrl = RoleSetController(informers=factory, control=KubeObjectControl(client), recorder=_Events())
    client.seed(ROLESETS, _roleset(pods_per_role))
    factory.start()
    try:
        assert await factory.wait_for_sync(timeout=10)
        key = f"{NS}/rs"
        for _ in range(100):  # create, mark Ready, until a pass writes nothing
            before = len(client.writes())
            _ready(client)
            await asyncio.sleep(0.05)  # the informers take in what the fake holds
            await ctrl.sync(key)
            if len(client.writes()) == before and len(ctrl.pods.store.list()) == 2 * pods_per_role:
                break
        rounds = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(passes):
                await ctrl.sync(key)
            rounds.append((time.process_time() - start) / passes * 1e6)
        return sorted(rounds)[len(rounds) // 2]
    finally:
        await factory.stop()
