"""Capture bench/fixtures/vllm-pod.json: one pod of a realistic vLLM StormService as the API server
returns it, managedFields included.

Needs a local control plane with the CRDs and the controller running (e.g. `make run
SAMPLE=bench/fixtures/vllm-stormservice.yaml` with KEEP_CLUSTER=1, or hack/localcluster.py up plus
`python -m controller`) and its kubectl on PATH:

    eval "$(python hack/localcluster.py env --dir .cluster)"
    python -m bench.capture

kwok moves the pods to Running but writes a thin status (no containerID, no imageID, node IPs of
127.0.0.1). The pod's status is therefore rewritten, through the status subresource with field
manager "kubelet", into what a kubelet 1.33+ on a GPU node reports (container IDs, image digests,
allocated resources, volume mounts, user), and read back, so that status and its managedFields
entry are the API server's own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MANIFEST = FIXTURES / "vllm-stormservice.yaml"
OUTPUT = FIXTURES / "vllm-pod.json"


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def hexdigest(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def kubelet_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The status a kubelet reports for `pod` once all its containers run and are ready."""
    created = pod["metadata"]["creationTimestamp"]
    statuses = []
    for i, container in enumerate(sorted(pod["spec"]["containers"], key=lambda c: c["name"])):
        resources = container.get("resources") or {}
        image = container["image"]
        repo = image.rsplit(":", 1)[0]
        status: dict[str, Any] = {
            "name": container["name"],
            "state": {"running": {"startedAt": created[:-3] + f"{47 + 5 * i:02d}Z"}},
            "lastState": {},
            "ready": True,
            "restartCount": 0,
            "image": f"docker.io/{image}",
            "imageID": f"docker.io/{repo}@sha256:{hexdigest(image)}",
            "containerID": f"containerd://{hexdigest(pod['metadata']['uid'] + container['name'])}",
            "started": True,
            "allocatedResources": dict(resources.get("requests") or {}),
            "resources": resources,
        }
        mounts = [
            {**m, "recursiveReadOnly": "Disabled"} if m.get("readOnly") else dict(m)
            for m in container.get("volumeMounts") or []
        ]
        if mounts:
            status["volumeMounts"] = mounts
        status["user"] = {"linux": {"uid": 0, "gid": 0, "supplementalGroups": [0]}}
        statuses.append(status)

    def condition(kind: str) -> dict[str, Any]:
        return {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": created}

    return {
        "phase": "Running",
        "conditions": [
            condition(kind)
            for kind in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ],
        "hostIP": "10.12.4.37",
        "hostIPs": [{"ip": "10.12.4.37"}],
        "podIP": "10.244.17.203",
        "podIPs": [{"ip": "10.244.17.203"}],
        "startTime": created,
        "containerStatuses": statuses,
        "qosClass": pod.get("status", {}).get("qosClass", "Burstable"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capture", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    ns = args.namespace
    kubectl("apply", "-n", ns, "-f", str(MANIFEST))
    deadline = time.monotonic() + args.timeout
    while True:
        pods = json.loads(
            kubectl("get", "pods", "-n", ns, "-l", "storm-service-name=llama-70b", "-o", "json")
        )
        running = [p for p in pods["items"] if p.get("status", {}).get("phase") == "Running"]
        if len(running) >= 4:
            break
        if time.monotonic() > deadline:
            print(f"only {len(running)} of 4 pods Running after {args.timeout}s", file=sys.stderr)
            return 1
        time.sleep(1)
    # The last pod of the last group: every index label and env var is non-zero.
    name = sorted(p["metadata"]["name"] for p in running)[-1]
    pod = json.loads(kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/pods/{name}"))
    patch = json.dumps({"status": kubelet_status(pod)})
    kubectl(
        "patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
        "--field-manager=kubelet", "-p", patch,
    )  # fmt: skip
    raw = kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/pods/{name}")
    OUTPUT.write_text(raw.strip() + "\n")
    print(f"wrote {OUTPUT} ({len(raw)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
