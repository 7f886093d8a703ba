"""Realistic pods for the memory benchmarks: variants of bench/fixtures/vllm-pod.json, one pod of a
vLLM StormService as the API server returns it (managedFields included; see bench/capture.py).

A variant changes what differs between the pods of a real cluster: pods of one role share the
template, and per pod are the name, uid, resourceVersion, timestamps, the index labels,
annotations and env vars, the leader address, the node, host and pod IPs, container IDs and the
name of the service-account token volume. Every 250 pods belong to another StormService (another
namespace, service name and template hash), 4 pods (2 groups of 2) to one RoleSet, and 4 pods run
on one node (2 of its 8 GPUs each).
"""

from __future__ import annotations

import datetime
import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "vllm-pod.json"

PODS_PER_SERVICE = 250
PODS_PER_ROLESET = 4
GROUP_SIZE = 2
PODS_PER_NODE = 4

_BASE_TIME = datetime.datetime(2026, 11, 20, 8, 0, 0, tzinfo=datetime.UTC)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _ts(seconds: int) -> str:
    return (_BASE_TIME + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _suffix(seed: int, n: int = 5) -> str:
    digest = hashlib.sha256(str(seed).encode()).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:n])


def _uid(*seed: object) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(repr(seed).encode()).digest()[:16], version=4))


class PodFactory:
    """Makes the i-th pod of a cluster of realistic pods (deterministic: the same i gives the
    same pod, so a relist of the same cluster sees equal objects)."""

    def __init__(self, fixture: Path = FIXTURE) -> None:
        self.text = fixture.read_text()
        pod = orjson.loads(self.text)
        meta = pod["metadata"]
        labels = meta["labels"]
        self.pod_name: str = meta["name"]
        self.podset: str = labels["stormservice.orchestration.aibrix.ai/podset-name"]
        self.roleset: str = labels["roleset-name"]
        self.service: str = labels["storm-service-name"]
        self.template_hash: str = labels["role-template-hash"]
        leader = self.podset + "-0"
        statuses = pod["status"]["containerStatuses"]
        # Longest first: a regex alternation takes the first alternative that matches.
        self.tokens = [
            self.pod_name,
            leader,
            self.podset,
            self.roleset,
            self.service,
            self.template_hash,
            meta["uid"],
            meta["ownerReferences"][0]["uid"],
            pod["spec"]["nodeName"],
            pod["status"]["hostIP"],
            pod["status"]["podIP"],
            *(s["containerID"] for s in statuses),
            "kube-api-access-fixed",
            f'"namespace":"{meta["namespace"]}"',
            f".{meta['namespace']}.svc",
        ]
        self.pattern = re.compile("|".join(re.escape(t) for t in sorted(self.tokens, key=len, reverse=True)))

    def pod(self, i: int) -> dict[str, Any]:
        service_index, in_service = divmod(i, PODS_PER_SERVICE)
        roleset_index, in_roleset = divmod(in_service, PODS_PER_ROLESET)
        replica, group_index = divmod(in_roleset, GROUP_SIZE)
        node = i // PODS_PER_NODE
        namespace = f"inference-{service_index % 8}"
        service = f"llama-70b-{service_index}"
        template_hash = _suffix(10**6 + service_index, 9)
        roleset = f"{service}-roleset-{_suffix(i // PODS_PER_ROLESET)}"
        podset = f"{roleset}-decode-{template_hash}-{replica}"
        created = (i // PODS_PER_ROLESET) * 7
        values = {
            self.pod_name: f"{podset}-{group_index}",
            self.podset + "-0": f"{podset}-0",
            self.podset: podset,
            self.roleset: roleset,
            self.service: service,
            self.template_hash: template_hash,
            self.tokens[6]: _uid("pod", i),
            self.tokens[7]: _uid("roleset", i // PODS_PER_ROLESET),
            self.tokens[8]: f"gpu-node-{node:05d}",
            self.tokens[9]: f"10.12.{node // 250}.{node % 250 + 1}",
            self.tokens[10]: f"10.244.{i // 250}.{i % 250 + 2}",
            self.tokens[11]: f"containerd://{hashlib.sha256(f'{i}/0'.encode()).hexdigest()}",
            self.tokens[12]: f"containerd://{hashlib.sha256(f'{i}/1'.encode()).hexdigest()}",
            "kube-api-access-fixed": f"kube-api-access-{_suffix(i + 10**9)}",
            self.tokens[14]: f'"namespace":"{namespace}"',
            self.tokens[15]: f".{namespace}.svc",
        }
        pod: dict[str, Any] = orjson.loads(self.pattern.sub(lambda m: values[m.group(0)], self.text))
        meta = pod["metadata"]
        meta["resourceVersion"] = str(100_000 + i)
        meta["creationTimestamp"] = _ts(created)
        labels = meta["labels"]
        labels["stormservice.orchestration.aibrix.ai/pod-group-index"] = str(group_index)
        labels["stormservice.orchestration.aibrix.ai/role-replica-index"] = str(replica)
        annotations = meta["annotations"]
        annotations["stormservice.orchestration.aibrix.ai/role-replica-index"] = str(replica)
        annotations["stormservice.orchestration.aibrix.ai/roleset-index"] = str(roleset_index)
        for entry in meta.get("managedFields") or []:
            entry["time"] = _ts(created + (60 + i % 120 if entry.get("subresource") == "status" else 0))
        env_values = {
            "ROLESET_INDEX": str(roleset_index),
            "ROLE_REPLICA_INDEX": str(replica),
            "POD_GROUP_INDEX": str(group_index),
        }
        for container in pod["spec"]["containers"]:
            for env in container.get("env") or []:
                if env["name"] in env_values:
                    env["value"] = env_values[env["name"]]
        status = pod["status"]
        status["startTime"] = _ts(created)
        ready = created + 60 + i % 120  # the model loads for a minute or two
        for condition in status["conditions"]:
            late = condition["type"] in ("Ready", "ContainersReady")
            condition["lastTransitionTime"] = _ts(ready if late else created)
        for k, container_status in enumerate(status["containerStatuses"]):
            container_status["state"]["running"]["startedAt"] = _ts(created + 3 + 5 * k)
        return pod

    def pods(self, n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield self.pod(i)


def list_pages(n: int, page_size: int = 500, resource_version: str = "200000") -> Iterator[bytes]:
    """The encoded pages of a paginated list of n realistic pods, as the API server sends them."""
    factory = PodFactory()
    pages = max(1, -(-n // page_size))
    for k in range(pages):
        items = [factory.pod(i) for i in range(k * page_size, min(n, (k + 1) * page_size))]
        for item in items:  # list items come without them
            del item["apiVersion"], item["kind"]
        meta: dict[str, Any] = {"resourceVersion": resource_version}
        if k + 1 < pages:
            meta["continue"] = f"page-{k + 1}"
        yield orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items})
