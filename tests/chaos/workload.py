"""The chaos suite's workload and its driver.

Two StormServices, between them every kind of role and both update strategies:
- `replica`: replica mode, 3 RoleSets, RollingUpdate (maxSurge 1, maxUnavailable 1); a stateless
  `prefill` (2 pods, surge 1) and a grouped `decode` (one group of 2, stateful).
- `pooled`: pooled mode, 1 RoleSet, InPlaceUpdate; a stateless `prefill` patched in place
  (InPlaceIfPossible, maxUnavailable 1), a stateful `decode` (2 slots, InPlaceIfPossible) and a
  grouped `worker` (2 groups of 2, Recreate, surge 1).
Iteration i rolls every role to the other image and changes scale (`replica` 3 <-> 2 RoleSets,
`pooled`'s prefill 2 <-> 3 pods), so each iteration is a rollout and a scale change.

`Kubelet` plays the part kwok does not: a pod whose images were patched in place gets container
statuses on the new images, as a kubelet reports after restarting its containers; pods the suite
made NotReady are made Ready again after a while, as a recovering probe would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from controller.runtime.client import KubeClient
from controller.runtime.errors import ApiError
from controller.runtime.resources import PODS, STORMSERVICES
from tests.chaos.invariants import pod_live
from tests.chaos.monitor import Monitor
from tests.storm_reads import StormReads

Obj = dict[str, Any]
API = "orchestration.aibrix.ai/v1alpha1"
IMAGES = ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.9")


def _role(
    name: str,
    replicas: int,
    image: str,
    *,
    group: int = 1,
    stateful: bool = False,
    strategy: dict[str, Any] | None = None,
) -> Obj:
    role: Obj = {
        "name": name,
        "replicas": replicas,
        "podGroupSize": group,
        "stateful": stateful,
        "template": {
            "metadata": {"labels": {"component": name}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "engine", "image": image}],
            },
        },
    }
    if strategy:
        role["updateStrategy"] = strategy
    return role


def _storm(name: str, replicas: int, strategy: Obj, roles: list[Obj]) -> Obj:
    return {
        "apiVersion": API,
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"roles": roles}},
        },
    }


def replica_mode(image: str, replicas: int) -> Obj:
    return _storm(
        "replica",
        replicas,
        {"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 1},
        [
            _role("prefill", 2, image, strategy={"maxSurge": 1, "maxUnavailable": 0}),
            _role("decode", 1, image, group=2, stateful=True),
        ],
    )


def pooled_mode(image: str, prefill: int) -> Obj:
    in_place = {"type": "InPlaceIfPossible", "maxUnavailable": 1}
    return _storm(
        "pooled",
        1,
        {"type": "InPlaceUpdate"},
        [
            _role("prefill", prefill, image, strategy=in_place),
            _role("decode", 2, image, stateful=True, strategy=in_place),
            _role(
                "worker", 2, image, group=2, strategy={"type": "Recreate", "maxSurge": 1, "maxUnavailable": 0}
            ),
        ],
    )


def target(iteration: int) -> list[Obj]:
    """The manifests iteration `iteration` ends at (0: the initial state)."""
    image = IMAGES[iteration % 2]
    return [replica_mode(image, 3 if iteration % 2 == 0 else 2), pooled_mode(image, 2 + iteration % 2)]


def rollout_patch(manifest: Obj) -> list[Obj]:
    """JSON patch: every role's image as in `manifest` (a new revision)."""
    roles = manifest["spec"]["template"]["spec"]["roles"]
    return [
        {
            "op": "replace",
            "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
            "value": role["template"]["spec"]["containers"][0]["image"],
        }
        for i, role in enumerate(roles)
    ]


def scale_patch(manifest: Obj) -> list[Obj]:
    """JSON patch: replicas and every role's replicas as in `manifest` (no new revision)."""
    roles = manifest["spec"]["template"]["spec"]["roles"]
    return [
        {"op": "replace", "path": "/spec/replicas", "value": manifest["spec"]["replicas"]},
        *(
            {"op": "replace", "path": f"/spec/template/spec/roles/{i}/replicas", "value": role["replicas"]}
            for i, role in enumerate(roles)
        ),
    ]


def runs_its_images(pod: Obj) -> bool:
    running = {s["name"]: s.get("image") for s in (pod.get("status") or {}).get("containerStatuses") or ()}
    return all(running.get(c["name"]) == c["image"] for c in pod["spec"]["containers"])


def set_ready(pod: Obj, ready: bool) -> Obj:
    status = "True" if ready else "False"
    conditions = [
        {**c, "status": status}
        for c in (pod.get("status") or {}).get("conditions") or ()
        if c.get("type") in ("Ready", "ContainersReady")
    ]
    return {"status": {"conditions": conditions}}


@dataclass
class Kubelet:
    """Reports new images after in-place patches; restores readiness of pods made NotReady."""

    client: KubeClient
    monitor: Monitor
    namespace: str
    not_ready: dict[str, float] = field(default_factory=dict)  # pod name -> when to restore
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def make_not_ready(self, pod: Obj, for_seconds: float) -> None:
        name = pod["metadata"]["name"]
        self.not_ready[name] = time.monotonic() + for_seconds
        with contextlib.suppress(ApiError):
            await self.client.patch(
                PODS,
                self.namespace,
                name,
                set_ready(pod, False),
                patch_type="strategic",
                subresource="status",
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            with contextlib.suppress(ApiError):
                await self._once()

    async def _once(self) -> None:
        now = time.monotonic()
        for name, due in list(self.not_ready.items()):
            if now >= due:
                del self.not_ready[name]
                pod = next((p for p in self.monitor.live_pods() if p["metadata"]["name"] == name), None)
                if pod is not None:
                    with contextlib.suppress(ApiError):
                        await self.client.patch(
                            PODS,
                            self.namespace,
                            name,
                            set_ready(pod, True),
                            patch_type="strategic",
                            subresource="status",
                        )
        for pod in self.monitor.live_pods():
            statuses = (pod.get("status") or {}).get("containerStatuses")
            if not statuses or runs_its_images(pod) or not pod_live(pod):
                continue
            new = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": f"sha256:{c['image'].rsplit(':', 1)[-1]}-{c['name']}",
                    "ready": True,
                    "restartCount": 1,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
                for c in pod["spec"]["containers"]
            ]
            with contextlib.suppress(ApiError):
                await self.client.patch(
                    PODS,
                    self.namespace,
                    pod["metadata"]["name"],
                    {"status": {"containerStatuses": new}},
                    patch_type="strategic",
                    subresource="status",
                )


@dataclass
class Workload(StormReads):
    kube: KubeClient
    namespace: str
    iteration: int = 0

    async def create(self) -> None:
        for manifest in target(0):
            await self.kube.create(STORMSERVICES, self.namespace, manifest)

    async def rollout(self, iteration: int) -> None:
        for manifest in target(iteration):
            await self.kube.patch(
                STORMSERVICES,
                self.namespace,
                manifest["metadata"]["name"],
                rollout_patch(manifest),
                patch_type="json",
            )

    async def scale(self, iteration: int) -> None:
        for manifest in target(iteration):
            await self.kube.patch(
                STORMSERVICES,
                self.namespace,
                manifest["metadata"]["name"],
                scale_patch(manifest),
                patch_type="json",
            )

    async def converged(self) -> bool:
        try:
            return all([await self.settled(m["metadata"]["name"]) for m in target(self.iteration)])
        except ApiError:
            return False

    async def wait_converged(
        self, within: float, alive: Callable[[], Awaitable[None]] | None = None
    ) -> float:
        """Seconds until every StormService is settled at the iteration's target (Ready, every
        RoleSet of the update revision and ready, every pod live); raises after `within`."""
        t0 = time.monotonic()
        while not await self.converged():
            if alive is not None:
                await alive()
            if time.monotonic() - t0 > within:
                raise AssertionError(
                    f"the workload did not converge within {within:.0f}s: {await self.describe()}"
                )
            await asyncio.sleep(0.5)
        return time.monotonic() - t0

    async def describe(self) -> str:
        out = []
        for manifest in target(self.iteration):
            name = manifest["metadata"]["name"]
            with contextlib.suppress(ApiError):
                ss = await self.ss(name)
                status = ss.get("status") or {}
                conditions = {
                    c["type"]: (c["status"], c.get("reason")) for c in status.get("conditions") or ()
                }
                pods = await self.pods(name)
                per_roleset = {
                    rs["metadata"]["name"]: sum(
                        1
                        for p in pods
                        if p["metadata"].get("labels", {}).get("roleset-name") == rs["metadata"]["name"]
                    )
                    for rs in await self.rolesets(name)
                }
                out.append(
                    f"{name}: gen {ss['metadata']['generation']} observed {status.get('observedGeneration')} "
                    f"replicas {status.get('replicas')} ready {status.get('readyReplicas')} "
                    f"updated {status.get('updatedReplicas')} revisions {status.get('currentRevision')}/"
                    f"{status.get('updateRevision')} {conditions}; {len(await self.rolesets(name))} RoleSets, "
                    f"{len(pods)} pods ({sum(1 for p in pods if p['metadata'].get('deletionTimestamp'))} terminating), "
                    f"pods per RoleSet {per_roleset}"
                )
        return "; ".join(out)
