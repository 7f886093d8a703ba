"""The in-place comparison against what the real API server stores.

Generated pod templates (zero values, empty strings, quantities in every spelling, pointer fields
set to zero, empty volume sources...) are rendered into pods as the RoleSet controller renders
them, created on the API server and read back. A template that differs only in container images
must be judged in place against the stored pod, and one that differs in anything else must not:
the API server's defaulting, omitempty and canonical quantities are no reason to recreate a pod.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.roleset import labels as L
from controller.roleset.inplace import inplace_diff
from controller.roleset.pods import PodSpecInputs, RoleSetInfo, render_pod
from controller.runtime.errors import NotFound
from controller.runtime.resources import PODS

pytestmark = pytest.mark.integration

Obj = dict[str, Any]

IMAGES = [
    "registry.k8s.io/pause:3.10",
    "nginx",
    "nginx:latest",
    "ghcr.io/org/vllm:rc1",
    "busybox@sha256:" + "a" * 64,
]
NEW_IMAGES = ["registry.k8s.io/pause:3.9", "nginx:1.27", "ghcr.io/org/vllm:1.0", "vllm/vllm-openai:v0.9"]
QUANTITY_CPU = st.sampled_from(["0.5", "500m", "1", "2", "1500m", "0.25", "100m"])
QUANTITY_MEMORY = st.sampled_from(["1Gi", "1024Mi", "1e9", "512M", "2G", "1073741824"])
EMPTY_OR = st.sampled_from


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field value, or the marker that the field is absent."""
    return st.one_of(st.just(_ABSENT), strategy)


_ABSENT = object()
_SERIAL = itertools.count()


def _fields(**strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Obj]:
    """An object with each field present or absent."""
    return st.fixed_dictionaries({k: _maybe(v) for k, v in strategies.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not _ABSENT}
    )


env_var = st.one_of(
    st.builds(lambda v: {"value": v}, st.sampled_from(["", "x", "$(ROLE_NAME)", "0"])),
    st.just({}),
    st.builds(
        lambda api: {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name", **api}}},
        st.sampled_from([{}, {"apiVersion": "v1"}]),
    ),
    st.builds(
        lambda divisor: {"valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", **divisor}}},
        st.sampled_from([{}, {"divisor": "1m"}, {"divisor": "1"}, {"divisor": "0.001"}]),
    ),
)

resources = st.one_of(
    st.just({}),
    st.builds(lambda cpu, mem: {"limits": {"cpu": cpu, "memory": mem}}, QUANTITY_CPU, QUANTITY_MEMORY),
    st.builds(
        lambda cpu, mem: {"requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}},
        QUANTITY_CPU,
        QUANTITY_MEMORY,
    ),
    st.builds(lambda cpu: {"requests": {"cpu": cpu}, "limits": {}}, QUANTITY_CPU),
)

probe = st.builds(
    lambda handler, timing: {**handler, **timing},
    st.sampled_from(
        [
            {"exec": {"command": ["true"]}},
            {"httpGet": {"path": "/health", "port": 8000}},
            {"httpGet": {"path": "", "port": "http", "scheme": "HTTP"}},
            {"tcpSocket": {"port": 8000, "host": ""}},
            {"grpc": {"port": 9000}},
        ]
    ),
    _fields(
        initialDelaySeconds=st.sampled_from([0, 5]),
        periodSeconds=st.sampled_from([5, 10]),
        timeoutSeconds=st.sampled_from([1, 3]),
        successThreshold=st.just(1),
        failureThreshold=st.sampled_from([3, 30]),
    ),
)

security_context = _fields(
    runAsUser=st.sampled_from([0, 1000]),
    runAsNonRoot=st.booleans(),
    privileged=st.just(False),
    allowPrivilegeEscalation=st.booleans(),
    readOnlyRootFilesystem=st.booleans(),
    capabilities=st.sampled_from([{}, {"add": []}, {"drop": ["ALL"]}, {"add": ["NET_ADMIN"], "drop": []}]),
)


def _container(name: str, with_port: bool) -> st.SearchStrategy[Obj]:
    return st.builds(
        lambda image, env, rest: {"name": name, "image": image, "env": env, **rest},
        st.sampled_from(IMAGES),
        st.lists(
            st.builds(lambda n, body: {"name": n, **body}, st.sampled_from(["A", "B", "C", "D"]), env_var),
            max_size=4,
            unique_by=lambda e: e["name"],
        ),
        _fields(
            command=st.sampled_from([[], ["sh", "-c"]]),
            args=st.sampled_from([[], ["serve", ""]]),
            workingDir=st.sampled_from(["", "/work"]),
            ports=st.just(
                [{"containerPort": 8000, "name": "http"}, {"containerPort": 9000, "protocol": "TCP"}]
            )
            if with_port
            else st.just([]),
            resources=resources,
            readinessProbe=probe,
            livenessProbe=probe if with_port else st.nothing(),
            securityContext=security_context,
            stdin=st.just(False),
            envFrom=st.sampled_from(
                [
                    [],
                    [
                        {"configMapRef": {"name": "cfg", "optional": True}},
                        {"prefix": "", "secretRef": {"name": "s"}},
                    ],
                ]
            ),
            startupProbe=probe,
            tty=st.booleans(),
            imagePullPolicy=st.sampled_from(["IfNotPresent", "Always"]),
            terminationMessagePolicy=st.sampled_from(["File", "FallbackToLogsOnError"]),
            volumeMounts=st.sampled_from(
                [
                    [],
                    [{"name": "cache", "mountPath": "/cache", "readOnly": False, "subPath": ""}],
                    [
                        {"name": "cache", "mountPath": "/cache"},
                        {"name": "cfg", "mountPath": "/cfg", "readOnly": True},
                    ],
                ]
            ),
            lifecycle=st.sampled_from([{}, {"preStop": {"exec": {"command": ["sleep", "1"]}}}]),
        ),
    )


volumes = st.just(
    [{"name": "cache", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]
) | st.builds(
    lambda cache, cfg, extra: [{"name": "cache", **cache}, {"name": "cfg", **cfg}, *extra],
    st.sampled_from(
        [
            {"emptyDir": {}},
            {"emptyDir": {"medium": "", "sizeLimit": "1Gi"}},
            {"emptyDir": {"medium": "Memory"}},
        ]
    ),
    st.sampled_from(
        [
            {"configMap": {"name": "cfg", "optional": True}},
            {"configMap": {"name": "cfg", "defaultMode": 420, "items": []}},
            {"secret": {"secretName": "cfg", "defaultMode": 256}},
            {"hostPath": {"path": "/tmp", "type": ""}},
            {"hostPath": {"path": "/tmp"}},
            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"projected": {"sources": [{"configMap": {"name": "cfg"}}]}},
        ]
    ),
    st.sampled_from([[], [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "0.5Gi"}}]]),
)

pod_spec = st.builds(
    lambda main, side, init, vols, rest: {
        "containers": [main, *side],
        **({"initContainers": init} if init else {}),
        "volumes": vols,
        **rest,
    },
    _container("engine", with_port=True),
    st.lists(_container("sidecar", with_port=False), max_size=1),
    st.lists(
        st.builds(
            lambda image: {"name": "init", "image": image, "command": ["true"]}, st.sampled_from(IMAGES)
        ),
        max_size=1,
    ),
    volumes,
    _fields(
        terminationGracePeriodSeconds=st.sampled_from([0, 30, 60]),
        restartPolicy=st.just("Always"),
        dnsPolicy=st.sampled_from(["ClusterFirst", "Default"]),
        enableServiceLinks=st.booleans(),
        automountServiceAccountToken=st.booleans(),
        hostNetwork=st.booleans(),
        hostAliases=st.sampled_from([[], [{"ip": "10.0.0.1", "hostnames": ["router"]}]]),
        dnsConfig=st.sampled_from([{}, {"options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}]),
        shareProcessNamespace=st.booleans(),
        activeDeadlineSeconds=st.just(3600),
        nodeSelector=st.sampled_from([{}, {"type": "kwok"}]),
        tolerations=st.sampled_from(
            [[], [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]]
        ),
        securityContext=_fields(fsGroup=st.sampled_from([0, 2000]), runAsNonRoot=st.booleans()),
        imagePullSecrets=st.sampled_from([[], [{"name": "regcred"}]]),
        readinessGates=st.sampled_from([[], [{"conditionType": L.INPLACE_READY_CONDITION}]]),
        affinity=st.sampled_from(
            [
                {},
                {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 10,
                                "podAffinityTerm": {
                                    "labelSelector": {"matchLabels": {"app": "llm"}, "matchExpressions": []},
                                    "topologyKey": "kubernetes.io/hostname",
                                },
                            }
                        ]
                    }
                },
            ]
        ),
        topologySpreadConstraints=st.sampled_from(
            [
                [],
                [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app": "llm"}},
                    }
                ],
            ]
        ),
    ),
)

template = st.builds(
    lambda spec, annotations: {
        "metadata": {"labels": {"app": "llm"}, "annotations": annotations},
        "spec": spec,
    },
    pod_spec,
    st.sampled_from([{}, {"note": ""}, {"prometheus.io/scrape": "true"}]),
)

roleset_info = st.sampled_from(
    [
        # A RoleSet no StormService owns: STORM_SERVICE_NAME and ROLESET_INDEX are empty.
        {},
        {"labels": {L.STORM_SERVICE_NAME_LABEL: "svc"}, "annotations": {L.ROLESET_INDEX_ANNOTATION: "0"}},
    ]
)
slot = st.sampled_from([(None, None, 1), (0, None, 1), (1, 0, 2), (1, 1, 2)])  # (index, member, group size)


def _render(
    namespace: str, meta: Obj, tpl: Obj, hash_: str, index: int | None, member: int | None, size: int
) -> Obj:
    info = RoleSetInfo(name="rs", namespace=namespace, uid="00000000-0000-0000-0000-000000000001", **meta)
    pod = render_pod(
        info,
        PodSpecInputs(
            role="engine", template=tpl, template_hash=hash_, group_size=size, stateful=index is not None
        ),
        index,
        member,
    )
    return pod


def _with_new_images(tpl: Obj, images: list[str]) -> Obj:
    out = copy.deepcopy(tpl)
    for c, image in zip(out["spec"]["containers"], images, strict=False):
        c["image"] = image
    return out


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    derandomize=False,
)
@given(
    tpl=template,
    meta=roleset_info,
    where=slot,
    new_images=st.lists(st.sampled_from(NEW_IMAGES), min_size=2, max_size=2),
)
async def test_templates_differing_only_in_images_are_updated_in_place(
    kube: Any,
    namespace: str,
    tpl: Obj,
    meta: Obj,
    where: tuple[int | None, int | None, int],
    new_images: list[str],
) -> None:
    index, member, size = where
    body = _render(namespace, meta, tpl, "h1", index, member, size)
    # No owner: the garbage collector would delete a pod whose owner does not exist.
    body["metadata"].pop("ownerReferences")
    if "name" in body["metadata"]:
        body["metadata"]["name"] += f"-{next(_SERIAL)}"
        body["spec"]["hostname"] = body["metadata"]["name"]
    created = await kube.create(PODS, namespace, body)
    name = created["metadata"]["name"]
    try:
        stored = await kube.get(PODS, namespace, name)

        # The stored pod keeps its own name and hostname; the desired pods are rendered for it.
        def desired(t: Obj, h: str) -> Obj:
            d = _render(namespace, meta, t, h, index, member, size)
            d["metadata"]["name"] = name
            if "hostname" in d["spec"]:
                d["spec"]["hostname"] = name
            return d

        assert inplace_diff(stored, desired(tpl, "h1")) is None, "the same template"
        new = _with_new_images(tpl, new_images)
        assert inplace_diff(stored, desired(new, "h2")) is None, "only the images differ"
        # And the comparison still sees a real change.
        changed = copy.deepcopy(new)
        changed["spec"]["containers"][0]["env"].append({"name": "ADDED", "value": "1"})
        assert inplace_diff(stored, desired(changed, "h2")) is not None
    finally:
        with contextlib.suppress(NotFound):
            await kube.delete(PODS, namespace, name, grace_period_seconds=0)
