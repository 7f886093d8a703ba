"""What integration tests read of a StormService and the objects it owns, and when they judge it
settled. One place, so every test waits for the same thing."""

from __future__ import annotations

from typing import Any

from controller.runtime.client import KubeClient, list_all
from controller.runtime.resources import CONTROLLER_REVISIONS, PODS, ROLESETS, STORMSERVICES

Obj = dict[str, Any]


def pods_per_roleset(manifest: Obj) -> int:
    return sum(
        r["replicas"] * r.get("podGroupSize", 1) for r in manifest["spec"]["template"]["spec"]["roles"]
    )


def condition(obj: Obj, type_: str) -> Obj | None:
    """The object's status condition of that type, None when it has none."""
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or () if c.get("type") == type_), None
    )


def is_pod_ready(pod: Obj) -> bool:
    return (condition(pod, "Ready") or {}).get("status") == "True"


def roleset_ready(rs: Obj) -> bool:
    meta = rs["metadata"]
    status = rs.get("status") or {}
    if meta.get("deletionTimestamp"):
        return False
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    reported = {r.get("name"): r for r in status.get("roles") or ()}
    return all(
        int((reported.get(r["name"]) or {}).get("readyReplicas") or 0) >= int(r.get("replicas", 1))
        for r in rs["spec"].get("roles") or ()
    )


def revision_of(rs: Obj) -> str:
    return str(rs["metadata"].get("labels", {}).get("storm-service-revision", ""))


class StormReads:
    """Reads straight from the API server (never a cache), in one namespace."""

    kube: KubeClient
    namespace: str

    async def ss(self, name: str) -> Obj:
        return await self.kube.get(STORMSERVICES, self.namespace, name)

    async def rolesets(self, name: str) -> list[Obj]:
        items, _ = await list_all(
            self.kube, ROLESETS, self.namespace, label_selector=f"storm-service-name={name}"
        )
        return items

    async def pods(self, name: str) -> list[Obj]:
        items, _ = await list_all(
            self.kube, PODS, self.namespace, label_selector=f"storm-service-name={name}"
        )
        return items

    async def revisions(self, name: str) -> list[Obj]:
        """Oldest first."""
        items, _ = await list_all(
            self.kube, CONTROLLER_REVISIONS, self.namespace, label_selector=f"name={name}"
        )
        return sorted(items, key=lambda r: int(r["revision"]))

    async def settled(self, name: str) -> Obj | None:
        """The StormService when it is Ready for its latest generation, with exactly `replicas`
        RoleSets, all of the update revision and ready, and every pod live (none going)."""
        ss = await self.ss(name)
        status = ss.get("status") or {}
        if status.get("observedGeneration") != ss["metadata"]["generation"]:
            return None
        ready: dict[str, Any] = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
        if ready.get("status") != "True" or status.get("currentRevision") != status.get("updateRevision"):
            return None
        rolesets = await self.rolesets(name)
        if len(rolesets) != ss["spec"]["replicas"]:
            return None
        if any(revision_of(rs) != status["updateRevision"] or not roleset_ready(rs) for rs in rolesets):
            return None
        pods = await self.pods(name)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if len(pods) != len(live) or len(live) != ss["spec"]["replicas"] * pods_per_roleset(ss):
            return None
        return ss
