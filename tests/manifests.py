"""StormService manifests the integration tests apply: one builder, so that a test names only
what it is about (a role's extra fields, the update strategy) and every test's pods stop at once
and carry the same labels."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

API = "orchestration.aibrix.ai/v1alpha1"
IMAGE = "registry.k8s.io/pause:3.10"
#: One RoleSet at a time: surge one, never below the replicas.
ROLLING: Obj = {"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0}
IN_PLACE: Obj = {"type": "InPlaceUpdate"}


def role(
    name: str,
    replicas: int,
    *,
    image: str = IMAGE,
    ports: list[Obj] | None = None,
    node_selector: dict[str, str] | None = None,
    **extra: Any,
) -> Obj:
    """A role of one `engine` container, labelled `component: <name>`, that stops at once;
    `extra` are more role fields (podGroupSize, dependsOn, service, ...)."""
    container: Obj = {"name": "engine", "image": image}
    if ports is not None:
        container["ports"] = ports
    spec: Obj = {"terminationGracePeriodSeconds": 0, "containers": [container]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "name": name,
        "replicas": replicas,
        "template": {"metadata": {"labels": {"component": name}}, "spec": spec},
        **extra,
    }


def storm(name: str, *roles: Obj, replicas: int = 1, strategy: Obj | None = ROLLING, **spec: Any) -> Obj:
    """A StormService of `roles` selecting `app: <name>`; `strategy` None leaves the update
    strategy to the API server's default; `spec` are more spec fields."""
    body: Obj = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"roles": list(roles)}},
    }
    if strategy is not None:
        body["updateStrategy"] = dict(strategy)
    return {"apiVersion": API, "kind": "StormService", "metadata": {"name": name}, "spec": {**body, **spec}}
