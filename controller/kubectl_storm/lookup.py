"""Reading a StormService and what it owns, straight from the API server (a CLI has no cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apis.v1alpha1 import constants as c
from controller.runtime.client import KubeClient, list_all
from controller.runtime.controllerref import is_controlled_by
from controller.runtime.resources import CONTROLLER_REVISIONS, ROLESETS, STORMSERVICES
from controller.runtime.revision import sort_revisions

Obj = dict[str, Any]

#: How kubectl names the kind in messages (`stormservice.orchestration.aibrix.ai/NAME paused`).
KIND_REF = f"{c.SINGULAR_STORM_SERVICE}.{c.GROUP}"


def object_ref(name: str) -> str:
    return f"{KIND_REF}/{name}"


@dataclass(frozen=True, slots=True)
class Target:
    client: KubeClient
    namespace: str
    name: str


async def get_storm_service(t: Target) -> Obj:
    return await t.client.get(STORMSERVICES, t.namespace, t.name)


async def owned_revisions(t: Target, storm_service: Obj) -> list[Obj]:
    """The StormService's ControllerRevisions, oldest first. Selected by the `name` label the
    controller writes, kept only when the StormService is their controller (a label alone could
    be anyone's)."""
    items, _ = await list_all(
        t.client,
        CONTROLLER_REVISIONS,
        t.namespace,
        label_selector=f"{c.LABEL_CONTROLLER_REVISION_NAME}={t.name}",
    )
    uid = storm_service["metadata"]["uid"]
    return sort_revisions(r for r in items if is_controlled_by(r, uid))


async def owned_rolesets(t: Target, storm_service: Obj) -> list[Obj]:
    items, _ = await list_all(
        t.client, ROLESETS, t.namespace, label_selector=f"{c.LABEL_STORM_SERVICE_NAME}={t.name}"
    )
    uid = storm_service["metadata"]["uid"]
    return sorted(
        (rs for rs in items if is_controlled_by(rs, uid)), key=lambda rs: str(rs["metadata"]["name"])
    )
