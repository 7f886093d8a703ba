"""Where S1's time goes: one create phase (ours, or kube-controller-manager's baseline), watched.

`make bench-scale` says how long S1 takes; this says why. It starts a local control plane and our
controller (the bench's QPS and burst, from the runtime venv), runs S1's create for one side or
both, and prints:

- the control plane's CPU seconds over the phase, per process (etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler, kwok, ours): on a small machine the phase is
  CPU-bound, so a slower phase usually means more work somewhere, not a slow controller;
- the API server's requests by verb and resource, and watch events by kind, over the phase
  (apiserver_request_total, apiserver_watch_events_total), and its CEL evaluation time;
- the events recorded in the namespace, by reason;
- percentiles over owners of the steps between watch observations: StormService created ->
  RoleSet created -> first pod -> last pod (-> scheduled -> Ready) -> RoleSet Ready ->
  StormService Ready; for kcm, ReplicaSet created -> first pod -> ... -> ReplicaSet Ready.

    python -m bench.timeline                          # kcm's phase, then ours
    python -m bench.timeline --only ours [--stormservices 50] [--profile DIR]

`--profile DIR` runs our controller under py-spy, as `bench.scale --profile` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench import scale
from controller.roleset.instances import is_pod_ready
from controller.runtime.client import ApiClient
from controller.runtime.controllerref import controller_ref_of
from controller.runtime.resources import EVENTS, NAMESPACES, PODS, ROLESETS, STORMSERVICES, Resource

Obj = dict[str, Any]
Key = tuple[str, str]  # (kind, name)
POLL_SECONDS = 0.1


@dataclass
class Recorder:
    """First time each object was seen, seen scheduled (pods) and seen Ready, in seconds after
    `start`."""

    start: float
    created: dict[Key, float] = field(default_factory=dict)
    scheduled: dict[Key, float] = field(default_factory=dict)
    ready: dict[Key, float] = field(default_factory=dict)
    owner: dict[Key, str | None] = field(default_factory=dict)

    def see(self, kind: str, obj: Obj, ready: bool) -> None:
        key = (kind, obj["metadata"]["name"])
        now = time.monotonic() - self.start
        self.created.setdefault(key, now)
        ref = controller_ref_of(obj)
        self.owner.setdefault(key, None if ref is None else str(ref["name"]))
        if ready:
            self.ready.setdefault(key, now)
        if obj.get("spec", {}).get("nodeName"):
            self.scheduled.setdefault(key, now)

    def count_ready(self, kind: str) -> int:
        return sum(1 for k, _ in self.ready if k == kind)


async def record(
    kube: ApiClient,
    resource: Resource,
    ns: str,
    kind: str,
    rec: Recorder,
    ready: Callable[[Obj], bool],
    listed: asyncio.Event,
) -> None:
    # Watching from the list's resourceVersion: whatever is created after the list is seen.
    rv = (await kube.list(resource, ns))["metadata"]["resourceVersion"]
    listed.set()
    while True:
        async for event in kube.watch(resource, ns, resource_version=rv):
            obj = event["object"]
            rv = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                rec.see(kind, obj, ready(obj))


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return f"p0 {ordered[0]:6.2f}  p50 {at(0.5):6.2f}  p90 {at(0.9):6.2f}  max {ordered[-1]:6.2f}"


def steps(rec: Recorder, top: str, mid: str | None) -> dict[str, list[float]]:
    """Per owner of kind `top` (through its `mid` child when there is one), the seconds of each
    step; only owners whose steps were all observed contribute to a step."""
    children: dict[str, list[str]] = defaultdict(list)
    for (_kind, name), owner in rec.owner.items():
        if owner is not None:
            children[owner].append(name)
    out: dict[str, list[float]] = defaultdict(list)
    for (kind, name), created in rec.created.items():
        if kind != top:
            continue
        group, group_created = name, created
        if mid is not None:
            mids = [m for m in children[name] if (mid, m) in rec.created]
            if not mids:
                continue
            group, group_created = mids[0], rec.created[(mid, mids[0])]
            out[f"1 {top} created -> {mid} created"].append(group_created - created)
        pods = [("pod", p) for p in children[group] if ("pod", p) in rec.created]
        if not pods:
            continue
        first = min(rec.created[p] for p in pods)
        last = max(rec.created[p] for p in pods)
        out["2 group created -> first pod"].append(first - group_created)
        out["3 first pod -> last pod"].append(last - first)
        scheduled = [p for p in pods if p in rec.scheduled]
        if scheduled:
            out["3a pod created -> scheduled (slowest)"].append(
                max(rec.scheduled[p] - rec.created[p] for p in scheduled)
            )
            out["3b pod scheduled -> Ready (slowest)"].append(
                max(rec.ready[p] - rec.scheduled[p] for p in scheduled if p in rec.ready)
            )
        if not all(p in rec.ready for p in pods):
            continue
        pods_ready = max(rec.ready[p] for p in pods)
        out["4 last pod -> last pod Ready"].append(pods_ready - last)
        if mid is not None and (mid, group) in rec.ready:
            out[f"5 last pod Ready -> {mid} Ready"].append(rec.ready[(mid, group)] - pods_ready)
            if (top, name) in rec.ready:
                out[f"6 {mid} Ready -> {top} Ready"].append(rec.ready[(top, name)] - rec.ready[(mid, group)])
        elif mid is None and (top, name) in rec.ready:
            out[f"5 last pod Ready -> {top} Ready"].append(rec.ready[(top, name)] - pods_ready)
        if (top, name) in rec.ready:
            out[f"9 {top} Ready, since the start"].append(rec.ready[(top, name)])
    return out


def apiserver_figures(cluster: Any) -> dict[str, float]:
    """Cumulative request counts by verb and resource, watch events by kind, CEL time."""
    kubectl = [str(Path(cluster.bin_dir) / "kubectl"), "--kubeconfig", str(cluster.kubeconfig)]
    text = subprocess.run(
        [*kubectl, "get", "--raw", "/metrics"], capture_output=True, text=True, check=True
    ).stdout
    figures: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "apiserver_request_total" and labels.get("verb") != "WATCH":
                sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
                dry = " (dry run)" if labels.get("dry_run") else ""
                figures[f"{labels.get('verb')} {labels.get('resource')}{sub}{dry}"] += sample.value
            elif sample.name == "apiserver_watch_events_total":
                figures[f"watch events {labels.get('kind') or labels.get('resource')}"] += sample.value
            elif sample.name == "apiserver_cel_evaluation_duration_seconds_sum":
                figures["CEL evaluation seconds"] += sample.value
    return figures


def cpu_by_process(cluster: Any, ours: scale.Controller) -> dict[str, float]:
    pids = {p.name: p.pid for p in cluster.load_state().procs}
    pids["ours"] = ours.pid
    return {name: scale.cpu_seconds(pid) for name, pid in pids.items()}


async def events_by_reason(kube: ApiClient, ns: str) -> dict[str, int]:
    reasons: dict[str, int] = defaultdict(int)
    for event in (await kube.list(EVENTS, ns)).get("items") or []:
        source = (event.get("source") or {}).get("component") or event.get("reportingComponent")
        reasons[f"{event.get('reason')} ({source}, {event['involvedObject']['kind']})"] += (
            event.get("count") or 1
        )
    return reasons


async def phase(kube: ApiClient, cluster: Any, ours: scale.Controller, which: str, count: int) -> None:
    ns = f"timeline-{which}"
    await kube.create(NAMESPACES, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    top: str
    mid: str | None
    watched: list[tuple[Resource, str, Callable[[Obj], bool]]]
    if which == "ours":
        top, mid, resource = "StormService", "RoleSet", STORMSERVICES
        objs = [scale.stormservice(f"s{i:03d}") for i in range(count)]
        watched = [(STORMSERVICES, top, scale.stormservice_done), (ROLESETS, "RoleSet", scale.roleset_done)]
    else:
        top, mid, resource = "ReplicaSet", None, scale.REPLICASETS
        objs = [scale.replicaset(f"r{i:03d}") for i in range(count)]
        watched = [(scale.REPLICASETS, top, scale.replicaset_done)]
    watched.append((PODS, "pod", is_pod_ready))
    rec = Recorder(time.monotonic())
    listed = [asyncio.Event() for _ in watched]
    tasks = [
        asyncio.create_task(record(kube, r, ns, kind, rec, done, seen))
        for (r, kind, done), seen in zip(watched, listed, strict=True)
    ]
    await asyncio.gather(*(seen.wait() for seen in listed))
    api_before, cpu_before = apiserver_figures(cluster), cpu_by_process(cluster, ours)
    rec.start = time.monotonic()
    await asyncio.gather(*(kube.create(resource, ns, o) for o in objs))
    deadline = rec.start + scale.CONVERGE_TIMEOUT
    while rec.count_ready(top) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{which}: {rec.count_ready(top)}/{count} {top}s Ready")
        await asyncio.sleep(POLL_SECONDS)
    seconds = time.monotonic() - rec.start
    cpu_after, api_after = cpu_by_process(cluster, ours), apiserver_figures(cluster)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    print(f"{which}: {count} {top}s Ready in {seconds:.1f} s", flush=True)
    print("  CPU seconds: " + ", ".join(f"{n} {cpu_after[n] - cpu_before[n]:.1f}" for n in cpu_after))
    print("  API server, over the phase:")
    diff = {k: v - api_before.get(k, 0.0) for k, v in api_after.items()}
    for key, value in sorted(diff.items(), key=lambda kv: -kv[1]):
        if value >= 10 or (key.startswith("CEL") and value > 0):
            print(f"    {value:10.1f}  {key}")
    reasons = await events_by_reason(kube, ns)
    print("  events: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    print("  steps (seconds, over owners):")
    for step, values in sorted(steps(rec, top, mid).items()):
        print(f"    {step:<44} {percentiles(values)}")


async def run(cluster: Any, only: str | None, stormservices: int, profile: Path | None) -> None:
    async with scale.controller_serving(cluster, profile) as (ours, kube):
        if only in (None, "kcm"):
            # S1's baseline: twice as many ReplicaSets of half the pods.
            await phase(kube, cluster, ours, "kcm", stormservices * 2)
        if only in (None, "ours"):
            await phase(kube, cluster, ours, "ours", stormservices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["ours", "kcm"])
    parser.add_argument("--stormservices", type=int, default=scale.STORMSERVICES_S1)
    parser.add_argument("--keep", type=Path, help="cluster state directory (kept for inspection)")
    parser.add_argument("--profile", type=Path, help="run our controller under py-spy, stacks into DIR")
    args = parser.parse_args()
    with scale.local_cluster(args.keep, nodes=10) as cluster:
        scale.install_crds(cluster)
        asyncio.run(run(cluster, args.only, args.stormservices, args.profile))


if __name__ == "__main__":
    main()
