"""In-place image updates: pure eligibility diff, patches, and the completion state machine.

States of a pod of an InPlaceIfPossible role (annotations on the pod):
  (none)                          -> outdated: eligible? patch images, record state -> in flight
  target=H, state={imageIDs...}   -> in flight: new images running and pod ready? -> complete:
                                     label role-template-hash=H, drop the annotations
  target=X != current hash        -> outdated again (template changed or reverted): re-patch
A pod with readiness gate `P in-place-update-ready` has that condition False while in flight.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from apis import podfields
from controller.roleset import labels as L
from controller.roleset.scheduling import is_topology_entry
from controller.runtime.timestamps import format_time, parse_time

Obj = dict[str, Any]

# Controller-managed metadata that differs between an outdated pod and its new template.
# A group keeps its name (which carries the old hash) through an in-place update, so the group
# name and what derives from it are the controller's too.
_OWN_LABELS = frozenset(
    {
        L.ROLE_TEMPLATE_HASH_LABEL,
        L.ROLE_REVISION_LABEL,
        L.ROLE_REVISION_NAME_LABEL,
        L.PODSET_NAME_LABEL,
        L.COSCHEDULING_POD_GROUP_LABEL,
        L.GODEL_POD_GROUP_ANNOTATION,
        L.VOLCANO_POD_GROUP_ANNOTATION,
    }
)
_OWN_ANNOTATIONS = frozenset(
    {
        # Derived from podGroupSize, which is compared on its own (an instance of another size
        # is never updated in place); AIBrix's pods lack it.
        L.POD_GROUP_SIZE_ANNOTATION,
        L.INPLACE_TARGET_HASH_ANNOTATION,
        L.INPLACE_STATE_ANNOTATION,
        L.INPLACE_PENDING_REASON_ANNOTATION,
        L.GODEL_POD_GROUP_ANNOTATION,
        L.VOLCANO_POD_GROUP_ANNOTATION,
    }
)
# ENTRY_ADDRESS names the entry pod, whose name carries the hash, as LEADER_ADDRESS does.
_OWN_ENV = frozenset({L.ENV_ROLE_TEMPLATE_HASH, L.ENV_PODSET_NAME, L.ENV_LEADER_ADDRESS, L.ENV_ENTRY_ADDRESS})
_INJECTED_ENV = frozenset(
    {
        L.ENV_STORM_SERVICE_NAME,
        L.ENV_ROLESET_NAME,
        L.ENV_ROLESET_INDEX,
        L.ENV_ROLE_NAME,
        L.ENV_ROLE_TEMPLATE_HASH,
        L.ENV_ROLE_REPLICA_INDEX,
        L.ENV_PODSET_NAME,
        L.ENV_POD_GROUP_INDEX,
        L.ENV_POD_GROUP_SIZE,
        L.ENV_LEADER_ADDRESS,
        L.ENV_GROUP_SIZE,
        L.ENV_ENTRY_ADDRESS,
        L.ENV_WORKER_INDEX,
    }
)

# Written by admission plugins (ServiceAccount, Priority) when the template leaves them out; the
# API server's own defaults are apis.podfields.DEFAULTS.
_ADMISSION_DEFAULTS: dict[str, Any] = {
    "serviceAccountName": "default",
    "serviceAccount": "default",
    "priority": 0,
    "preemptionPolicy": "PreemptLowerPriority",
}
_VOLUME_SOURCE_KEYS = frozenset(podfields.pod_spec_fields()["Volume"]) - {"name"}
_DEFAULT_TOLERATION_KEYS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


# ---------------------------------------------------------------------------------------------
# Images


def _has_tag_or_digest(image: str) -> bool:
    return "@" in image or ":" in image.rsplit("/", 1)[-1]


def default_pull_policy(image: str) -> str:
    if "@" in image:
        return "IfNotPresent"
    if not _has_tag_or_digest(image) or image.rsplit(":", 1)[-1] == "latest":
        return "Always"
    return "IfNotPresent"


def _image_candidates(spec_image: str) -> set[str]:
    out = {spec_image}
    if not _has_tag_or_digest(spec_image):
        out.add(spec_image + ":latest")
    first, _, _ = spec_image.partition("/")
    if "/" not in spec_image:
        full = "docker.io/library/" + spec_image
    elif "." in first or ":" in first or first == "localhost":
        full = spec_image
    else:
        full = "docker.io/" + spec_image
    out.add(full)
    if not _has_tag_or_digest(full):
        out.add(full + ":latest")
    return out


def runtime_image_matches(runtime_image: str, spec_image: str) -> bool:
    """Container runtimes report the image normalised (docker.io/library/..., :latest)."""
    return runtime_image in _image_candidates(spec_image) or spec_image in _image_candidates(runtime_image)


# ---------------------------------------------------------------------------------------------
# Eligibility


def _strip_defaults(obj: Obj, desired: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    for key, value in defaults.items():
        if key not in desired and obj.get(key) == value:
            obj.pop(key, None)


def _normalize_container(c: Obj, *, image: str | None, drop_mounts: set[str], own_env: bool) -> None:
    c.pop("imagePullPolicy", None)  # compared apart: see _pull_policy_difference
    if image is not None:
        c["image"] = image
    resources = c.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
        # The API server defaults each missing request to its limit.
        requests = resources.get("requests")
        resources["requests"] = {**resources["limits"], **(requests if isinstance(requests, dict) else {})}
    if own_env and c.get("env"):
        # The variables a controller injects are compared as a set: AIBrix's controller puts the
        # PodSet ones first, ours puts them after the service's; either way they come before the
        # template's own (which keep their order: a later one may refer to an earlier one). The
        # leader's address is ours alone (AIBrix sets none), and derived like the hash.
        injected = sorted(
            ({**e, "value": ""} if e.get("name") in _OWN_ENV else e
             for e in c["env"] if e.get("name") in _INJECTED_ENV and e.get("name") != L.ENV_LEADER_ADDRESS),
            key=lambda e: str(e.get("name")),
        )  # fmt: skip
        c["env"] = injected + [e for e in c["env"] if e.get("name") not in _INJECTED_ENV]
    if drop_mounts and c.get("volumeMounts"):
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m.get("name") not in drop_mounts]


def _is_default_toleration(t: Mapping[str, Any]) -> bool:
    return (
        t.get("key") in _DEFAULT_TOLERATION_KEYS
        and t.get("operator") == "Exists"
        and t.get("effect") == "NoExecute"
        and t.get("tolerationSeconds") == 300
    )


def _is_service_account_volume(v: Mapping[str, Any]) -> bool:
    sources = (v.get("projected") or {}).get("sources") or ()
    return str(v.get("name", "")).startswith("kube-api-access-") and any(
        "serviceAccountToken" in s for s in sources
    )


def _drop_affinity_term(
    spec: Obj, term: Mapping[str, Any] | None, stale: Callable[[str, Any], bool] | None = None
) -> None:
    """Topology terms are added to new pods only (existing pods are never touched), so an old
    pod lacking the controller's term, or carrying one that an earlier policy or an earlier
    version of the controller gave it (`stale`), is not a reason to recreate it."""
    if term is None and stale is None:
        return
    pod_affinity = (spec.get("affinity") or {}).get("podAffinity")
    if not isinstance(pod_affinity, dict):
        return
    for key in (
        "requiredDuringSchedulingIgnoredDuringExecution",
        "preferredDuringSchedulingIgnoredDuringExecution",
    ):
        terms = pod_affinity.get(key)
        if isinstance(terms, list):
            pod_affinity[key] = [t for t in terms if t != term and not (stale is not None and stale(key, t))]
            if not pod_affinity[key]:
                pod_affinity.pop(key)
    if not pod_affinity:
        spec["affinity"].pop("podAffinity")
    if not spec["affinity"]:
        spec.pop("affinity")


def _normalize_spec(
    spec: Obj,
    desired: Mapping[str, Any],
    images: Mapping[str, str] | None,
    own_term: Mapping[str, Any] | None,
    stale_term: Callable[[str, Any], bool] | None = None,
) -> Obj:
    spec = copy.deepcopy(spec)
    _drop_affinity_term(spec, own_term, stale_term)
    _strip_defaults(spec, desired, _ADMISSION_DEFAULTS)
    if "priorityClassName" in desired:
        spec.pop("priority", None)
    if spec.get("serviceAccount") == spec.get("serviceAccountName"):
        spec.pop("serviceAccount", None)
    spec.pop("hostname", None)
    if "nodeName" not in desired:
        spec.pop("nodeName", None)
    if spec.get("tolerations"):
        spec["tolerations"] = [t for t in spec["tolerations"] if not _is_default_toleration(t)]
    dropped: set[str] = set()
    volumes = []
    for v in spec.get("volumes") or ():
        if _is_service_account_volume(v):
            dropped.add(str(v.get("name")))
            continue
        if not _VOLUME_SOURCE_KEYS & set(v):
            v = {**v, "emptyDir": {}}  # the API server's default source
        volumes.append(v)
    spec["volumes"] = volumes
    if spec.get("hostNetwork") is True:
        # The API server defaults each host port of a host-network pod to its container port.
        for c in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ())):
            for port in c.get("ports") or ():
                if isinstance(port, dict) and not port.get("hostPort"):
                    port["hostPort"] = port.get("containerPort")
    for c in spec.get("initContainers") or ():
        _normalize_container(c, image=None, drop_mounts=dropped, own_env=True)
    for c in spec.get("containers") or ():
        name = c.get("name")
        _normalize_container(
            c,
            image=images.get(name) if images is not None and name else None,
            drop_mounts=dropped,
            own_env=True,
        )
    # What the API server cannot keep (a non-pointer field at its zero value, e.g. an env var's
    # empty value, which it stores without the key) and what it defaults are not differences,
    # at any depth.
    normalized: Obj = podfields.normalize(spec, "PodSpec")
    return normalized


def _first_difference(a: Any, b: Any, path: str = "spec") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}"
            diff = _first_difference(a[key], b[key], f"{path}.{key}")
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = _first_difference(x, y, f"{path}[{i}]")
            if diff:
                return diff
        return None
    return None if a == b else path


def container_images(spec: Mapping[str, Any], key: str = "containers") -> dict[str, str]:
    return {str(c.get("name")): str(c.get("image", "")) for c in spec.get(key) or ()}


def _pull_policy_difference(live_spec: Mapping[str, Any], want_spec: Mapping[str, Any]) -> str | None:
    """The pull policy is immutable and the API server defaults it from the image, so a pod
    patched to a new image keeps the policy its old image gave it. That is a difference only
    when the template asks for another policy, or the pod's policy was chosen (not its old
    image's default) and is not what the template gives."""
    for key in ("initContainers", "containers"):
        live = {c.get("name"): c for c in live_spec.get(key) or ()}
        for i, want in enumerate(want_spec.get(key) or ()):
            have = live.get(want.get("name")) or {}
            old_default = default_pull_policy(str(have.get("image", "")))
            have_policy = have.get("imagePullPolicy") or old_default
            wanted = want.get("imagePullPolicy")
            if wanted is not None:
                same = wanted == have_policy
            else:
                same = have_policy in (old_default, default_pull_policy(str(want.get("image", ""))))
            if not same:
                return f"spec.{key}[{i}].imagePullPolicy changed"
    return None


def inplace_diff(
    pod: Mapping[str, Any], desired: Mapping[str, Any], own_affinity_term: Mapping[str, Any] | None = None
) -> str | None:
    """None when `pod` can become `desired` by patching container images alone (API-server
    defaults and the controller's own labels ignored); else why not."""
    live_spec = pod.get("spec") or {}
    want_spec = desired.get("spec") or {}
    live_names = [c.get("name") for c in live_spec.get("containers") or ()]
    want_names = [c.get("name") for c in want_spec.get("containers") or ()]
    if live_names != want_names:
        return "containers added, removed or reordered"
    if container_images(live_spec, "initContainers") != container_images(want_spec, "initContainers"):
        return "init container images changed"
    want_images = container_images(want_spec)
    policy = _pull_policy_difference(live_spec, want_spec)
    if policy:
        return policy
    want_affinity = (want_spec.get("affinity") or {}).get("podAffinity") or {}
    pod_labels = L.labels_of(pod)

    def stale(key: str, entry: Any) -> bool:
        # A term of ours that the new pod would not get (the user's own terms are in `desired`).
        return entry not in (want_affinity.get(key) or ()) and is_topology_entry(key, entry, pod_labels)

    a = _normalize_spec(dict(live_spec), want_spec, want_images, own_affinity_term, stale)
    b = _normalize_spec(dict(want_spec), want_spec, None, own_affinity_term)
    diff = _first_difference(a, b)
    if diff:
        return f"{diff} changed"
    live_labels = L.labels_of(pod)
    for key, value in L.labels_of(desired).items():
        if key not in _OWN_LABELS and live_labels.get(key) != value:
            return f"label {key} changed"
    live_ann = L.annotations_of(pod)
    for key, value in L.annotations_of(desired).items():
        if key not in _OWN_ANNOTATIONS and live_ann.get(key) != value:
            return f"annotation {key} changed"
    return None


# ---------------------------------------------------------------------------------------------
# Patches


def has_inplace_gate(pod: Mapping[str, Any]) -> bool:
    return any(
        g.get("conditionType") == L.INPLACE_READY_CONDITION
        for g in (pod.get("spec") or {}).get("readinessGates") or ()
    )


def pod_condition(pod: Mapping[str, Any], type_: str) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def gate_status_patch(status: str, now: datetime) -> Obj:
    """Strategic-merge patch of pod status setting the in-place readiness gate condition. The
    kubelet owns Ready and recomputes it from the gate; we never write Ready ourselves."""
    return {
        "status": {
            "conditions": [
                {
                    "type": L.INPLACE_READY_CONDITION,
                    "status": status,
                    "reason": "InPlaceUpdating" if status == "False" else "InPlaceUpdateReady",
                    "lastTransitionTime": format_time(now),
                }
            ]
        }
    }


def start_patch(pod: Mapping[str, Any], desired: Mapping[str, Any], target_hash: str, now: datetime) -> Obj:
    """Strategic-merge patch: new images, the target hash, and the runtime state to compare
    against (imageID and image of every container whose image changes)."""
    live_images = container_images(pod.get("spec") or {})
    want_images = container_images(desired.get("spec") or {})
    statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or ()}
    last: dict[str, dict[str, str]] = {}
    containers: list[Obj] = []
    for name, image in want_images.items():
        if live_images.get(name) == image:
            continue
        containers.append({"name": name, "image": image})
        st = statuses.get(name) or {}
        # How the kubelet will show that it restarted the container on the new image: a new
        # imageID, or (the new tag has the old digest) a new container, restart count or start.
        last[name] = {
            "imageID": str(st.get("imageID") or ""),
            "image": str(st.get("image") or live_images.get(name, "")),
            "containerID": str(st.get("containerID") or ""),
            "restartCount": str(int(st.get("restartCount") or 0)),
            "startedAt": _started_at(st),
        }
    state = {"lastContainerStatuses": last, "updateTimestamp": format_time(now)}
    patch: Obj = {
        "metadata": {
            "annotations": {
                L.INPLACE_TARGET_HASH_ANNOTATION: target_hash,
                L.INPLACE_STATE_ANNOTATION: orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode(),
                L.INPLACE_PENDING_REASON_ANNOTATION: None,
            }
        }
    }
    if containers:
        patch["spec"] = {"containers": containers}
    return patch


def _started_at(status: Mapping[str, Any]) -> str:
    running = (status.get("state") or {}).get("running") or {}
    return str(running.get("startedAt") or "")


def _restarted(status: Mapping[str, Any], before: Mapping[str, str]) -> bool:
    """Whether the container the kubelet reports is not the one recorded when the update began."""
    container_id = str(status.get("containerID") or "")
    if before.get("containerID") and container_id and container_id != before["containerID"]:
        return True
    count = before.get("restartCount")
    if count is not None and count.isdigit() and int(status.get("restartCount") or 0) > int(count):
        return True
    started = _started_at(status)
    # RFC 3339 timestamps of one clock (the node's) in one format compare as strings.
    return bool(before.get("startedAt") and started and started > before["startedAt"])


def complete_patch(target_hash: str, revision: str | None, revision_name: str | None) -> Obj:
    lbls: dict[str, str | None] = {L.ROLE_TEMPLATE_HASH_LABEL: target_hash}
    if revision is not None:
        lbls[L.ROLE_REVISION_LABEL] = revision
    if revision_name is not None:
        lbls[L.ROLE_REVISION_NAME_LABEL] = revision_name
    return {
        "metadata": {
            "labels": lbls,
            "annotations": {
                L.INPLACE_TARGET_HASH_ANNOTATION: None,
                L.INPLACE_STATE_ANNOTATION: None,
                L.INPLACE_PENDING_REASON_ANNOTATION: None,
            },
        }
    }


# ---------------------------------------------------------------------------------------------
# Completion


@dataclass(frozen=True, slots=True)
class InPlaceCheck:
    done: bool
    reason: str  # pending reason, "" when done
    started: datetime | None
    detail: str = ""


def parse_state(pod: Mapping[str, Any]) -> tuple[dict[str, dict[str, str]], datetime | None]:
    raw = L.annotations_of(pod).get(L.INPLACE_STATE_ANNOTATION)
    if not raw:
        return {}, None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}, None
    if not isinstance(data, dict):
        return {}, None
    last = data.get("lastContainerStatuses")
    started = parse_time(data.get("updateTimestamp"))
    return (last if isinstance(last, dict) else {}), started


def check_completion(pod: Mapping[str, Any]) -> InPlaceCheck:
    """Done when the pod is ready (its containers, if it carries the in-place gate, which holds
    Ready False) and every patched container runs its new image: the runtime reports the spec
    image, and either an imageID different from the one recorded at the start or a container
    restarted since then (a new tag of the same digest keeps the imageID); unless the update
    went back to the image that was running then."""
    last, started = parse_state(pod)
    ready_type = "ContainersReady" if has_inplace_gate(pod) else "Ready"
    if pod_condition(pod, ready_type) != "True":
        return InPlaceCheck(False, "PodNotReady", started)
    statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or ()}
    for c in (pod.get("spec") or {}).get("containers") or ():
        name = c.get("name")
        image = str(c.get("image", ""))
        st = statuses.get(name)
        if st is None:
            return InPlaceCheck(False, "ContainerStatusMissing", started, str(name))
        if not st.get("ready"):
            return InPlaceCheck(False, "ContainerNotReady", started, str(name))
        runtime_image = str(st.get("image") or "")
        if runtime_image and not runtime_image_matches(runtime_image, image):
            return InPlaceCheck(False, "RuntimeImageMismatch", started, f"{name}: {runtime_image}")
        old = last.get(str(name))
        if not old:
            continue
        old_image = old.get("image") or ""
        if old_image and runtime_image_matches(old_image, image):
            continue  # back to the image that was running: nothing has to restart
        if old.get("imageID") and st.get("imageID") == old.get("imageID") and not _restarted(st, old):
            return InPlaceCheck(False, "ContainerNotRestarted", started, str(name))
    return InPlaceCheck(True, "", started)
