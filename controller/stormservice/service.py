"""The headless Service of a StormService: stable DNS names for its pods.

Pods set `hostname` to their name and `subdomain` to the StormService name, so each pod resolves
as `<pod>.<ss>.<namespace>.svc`; grouped pods find their leader that way (LEADER_ADDRESS).

The Service carries the StormService's own labels, as AIBrix's does (tools that find a service's
objects by its labels find this one too), plus `storm-service-name`. Labels we set are repaired
when they drift; labels someone else added are left alone, and a label removed from the
StormService stays on the Service (we cannot tell it from one added by hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from apis.v1alpha1 import constants as c
from controller.runtime.controllerref import is_controlled_by, new_controller_ref

Obj = dict[str, Any]


def service_labels(storm_service: Mapping[str, Any]) -> dict[str, str]:
    meta = storm_service["metadata"]
    return {**(meta.get("labels") or {}), c.LABEL_STORM_SERVICE_NAME: meta["name"]}


def desired_service(storm_service: Mapping[str, Any]) -> Obj:
    meta = storm_service["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": service_labels(storm_service),
            "ownerReferences": [new_controller_ref(storm_service, c.API_VERSION, c.KIND_STORM_SERVICE)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {c.LABEL_STORM_SERVICE_NAME: meta["name"]},
            "publishNotReadyAddresses": True,
        },
    }


@dataclass(frozen=True, slots=True)
class ServiceAction:
    """`create`; `patch` with a merge `patch`; `recreate` (clusterIP is immutable, so a Service
    that lost headlessness must be deleted first); `conflict` (a Service of that name belongs to
    someone else: left alone and reported); `none`."""

    action: Literal["none", "create", "patch", "recreate", "conflict"]
    patch: Obj | None = None


def plan_service(storm_service: Mapping[str, Any], existing: Mapping[str, Any] | None) -> ServiceAction:
    if existing is None:
        return ServiceAction("create")
    if existing.get("metadata", {}).get("deletionTimestamp"):
        return ServiceAction("none")  # wait for it to go, then create
    if not is_controlled_by(existing, storm_service["metadata"]["uid"]):
        return ServiceAction("conflict")
    want = desired_service(storm_service)["spec"]
    have = existing.get("spec") or {}
    if have.get("clusterIP") != "None":
        return ServiceAction("recreate")
    patch: Obj = {}
    if have.get("selector") != want["selector"]:
        # A merge patch merges maps: remove every selector key we do not want.
        patch["selector"] = {**dict.fromkeys(have.get("selector") or {}), **want["selector"]}
    if have.get("publishNotReadyAddresses") is not True:
        patch["publishNotReadyAddresses"] = True
    have_labels = (existing.get("metadata") or {}).get("labels") or {}
    labels = {k: v for k, v in service_labels(storm_service).items() if have_labels.get(k) != v}
    body: Obj = {}
    if labels:
        body["metadata"] = {"labels": labels}
    if patch:
        body["spec"] = patch
    return ServiceAction("patch", body) if body else ServiceAction("none")
