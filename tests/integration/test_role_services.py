"""Per-role Services (`RoleSpec.service`, issue 15), on the local control plane.

- test_the_crd_refuses_contradictory_services: admission (CEL) of the field, with the messages
  users see; samples/role-services.yaml passes a server-side dry run.
- test_role_services_follow_their_roles_through_rollouts_and_edits: a ClusterIP Service for a
  router role and a Headless one for workers select exactly their role's pods (EndpointSlices of
  the real endpointslice controller), with ports from the template; through a RollingUpdate
  rollout the Service keeps its name and object and its endpoints are never empty; editing
  `service` restarts no pod and makes no revision; ClusterIP -> NodePort is a patch,
  NodePort -> Headless a delete and create (event); removing the field deletes the Service.
- test_a_service_someone_else_holds_is_left_alone: a pre-existing unowned Service of that name
  is never written; ServiceConflict condition and event; once it is gone ours is created.
- test_an_aibrix_manifest_without_service_makes_only_the_headless_service:
  samples/prefill-decode.yaml as before: one Service (the headless one), no new condition.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import ControllerProcess, Kubectl, wait_until
from tests.kubectl_reads import StormServiceReads
from tests.manifests import role, storm
from tests.storm_reads import is_pod_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

IMAGE_V2 = "registry.k8s.io/pause:3.9"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CONDITION = "RoleServicesSynced"
Obj = dict[str, Any]


HTTP = [{"name": "http", "containerPort": 8000}]


class Served(StormServiceReads):
    """Reads of one StormService, its Services, EndpointSlices and pods, through kubectl."""

    wait_timeout = 180.0

    def service(self, role: str) -> Obj | None:
        name = f"{self.name}-{role}"
        if not self.kubectl.exists("service", name, "-n", self.namespace):
            return None
        result: Obj = self.get("service", name)
        return result

    def services(self) -> list[str]:
        items = self.get("services")["items"]
        return sorted(s["metadata"]["name"] for s in items)

    def ready_ips(self, role: str) -> set[str]:
        return {
            p["status"]["podIP"]
            for p in self.pods(role)
            if (p.get("status") or {}).get("podIP") and is_pod_ready(p)
        }

    def endpoints(self, role: str) -> tuple[set[str], set[str]]:
        """(ready, all) addresses of the Service's EndpointSlices."""
        slices = self.get("endpointslices", "-l", f"kubernetes.io/service-name={self.name}-{role}")["items"]
        ready: set[str] = set()
        every: set[str] = set()
        for s in slices:
            for ep in s.get("endpoints") or ():
                every.update(ep["addresses"])
                if (ep.get("conditions") or {}).get("ready"):
                    ready.update(ep["addresses"])
        return ready, every

    def endpoint_ports(self, role: str) -> list[Obj]:
        slices = self.get("endpointslices", "-l", f"kubernetes.io/service-name={self.name}-{role}")["items"]
        return sorted((p for s in slices for p in s.get("ports") or ()), key=lambda p: str(p.get("name")))

    def condition(self) -> Obj:
        status = self.get("stormservice", self.name).get("status") or {}
        return next((c for c in status.get("conditions") or () if c["type"] == CONDITION), {})

    def events(self, reason: str) -> list[Obj]:
        """Events of that reason on the StormService."""
        return [e for e in super().events(reason) if e["involvedObject"]["name"] == self.name]

    def settled(self) -> bool:
        ss = self.get("stormservice", self.name)
        status = ss.get("status") or {}
        ready: Obj = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
        want = sum(r["replicas"] for r in ss["spec"]["template"]["spec"]["roles"]) * ss["spec"]["replicas"]
        pods = self.pods()
        return (
            status.get("observedGeneration") == ss["metadata"]["generation"]
            and ready.get("status") == "True"
            and status.get("currentRevision") == status.get("updateRevision")
            and len(pods) == want
            and all((p.get("status") or {}).get("podIP") for p in pods)
        )

    def endpoints_are_the_pods(self, role: str) -> bool:
        ready, every = self.endpoints(role)
        ips = self.ready_ips(role)
        return bool(ips) and ready == ips and every == ips


class EndpointSliceWatch:
    """Every state a Service's EndpointSlices go through (`kubectl get --watch`), from the
    state when it is entered."""

    def __init__(self, kubectl: Kubectl, namespace: str, service: str) -> None:
        self.argv = [
            kubectl.binary, f"--kubeconfig={kubectl.kubeconfig}", "get", "endpointslices", "-n", namespace,
            "-l", f"kubernetes.io/service-name={service}", "--watch", "--output-watch-events", "-o", "json",
        ]  # fmt: skip
        self.lines: list[str] = []

    def __enter__(self) -> EndpointSliceWatch:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=self.lines.extend, args=(self.proc.stdout,), daemon=True)
        self.reader.start()
        # The first event (the present slices) is in: nothing after this is missed.
        wait_until(lambda: bool(self.lines) or self.proc.poll() is not None, 60, "the EndpointSlice watch")
        assert self.lines, f"the watch ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.reader.join(timeout=30)

    def ready_history(self) -> list[set[str]]:
        """The uids of the ready pods of all the Service's slices together, after each event."""
        decoder = json.JSONDecoder()
        slices: dict[str, Obj] = {}
        history: list[set[str]] = []
        text, pos = "".join(self.lines), 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                return history
            event, pos = decoder.raw_decode(text, pos)
            obj = event["object"]
            if event["type"] == "DELETED":
                slices.pop(obj["metadata"]["name"], None)
            else:
                slices[obj["metadata"]["name"]] = obj
            history.append({
                ep["targetRef"]["uid"]
                for s in slices.values()
                for ep in s.get("endpoints") or ()
                if (ep.get("conditions") or {}).get("ready") and ep.get("targetRef")
            })  # fmt: skip


def test_the_crd_refuses_contradictory_services(kubectl: Kubectl, namespace: str, crds: list[str]) -> None:
    refusals = [
        (
            {"ports": [{"port": 80}, {"port": 81, "name": "b"}]},
            "service ports need a name each, unique among them, when there are more than one",
        ),
        (
            {"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]},
            "service ports need a name each, unique among them",
        ),
        ({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}, "service ports must differ in port or protocol"),
        (
            {"type": "Headless", "ports": [{"port": 80, "nodePort": 30080}]},
            "nodePort is allowed only with service type NodePort or LoadBalancer",
        ),
        ({"ports": [{"port": 80, "nodePort": 30080}]}, "nodePort is allowed only with service type NodePort"),
        ({"type": "ExternalName"}, 'supported values: "ClusterIP", "NodePort", "LoadBalancer", "Headless"'),
        ({"ports": [{"port": 70000}]}, "should be less than or equal to 65535"),
    ]  # fmt: skip
    for i, (service, message) in enumerate(refusals):
        manifest = storm(f"refused-{i}", role("router", 1, ports=HTTP, service=service), replicas=2)
        refused = kubectl.apply(manifest, "-n", namespace, check=False)
        assert refused.returncode != 0, f"admitted {service}, expected: {message}"
        assert message in refused.stderr, refused.stderr

    # The same kinds of settings, consistent, are admitted; so is the sample.
    kubectl.apply(
        storm(
            "accepted",
            role("router", 1, ports=HTTP, service={"type": "NodePort", "ports": [{"port": 80, "targetPort": "http", "nodePort": 30080}]}),
            role("worker", 1, ports=[], service={"type": "Headless"}),
            role("dns", 1, ports=[], service={"ports": [{"port": 53, "name": "dns"}, {"port": 53, "name": "dns-udp", "protocol": "UDP"}]}),
            replicas=2,
        ),
        "-n", namespace, "--dry-run=server",
    )  # fmt: skip
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(SAMPLES / "role-services.yaml"))


def test_role_services_follow_their_roles_through_rollouts_and_edits(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "pd"
    kubectl.apply(
        storm(
            name,
            role("router", 1, ports=HTTP, service={"type": "ClusterIP"}),
            role("worker", 2, ports=[{"containerPort": 9000}], service={"type": "Headless"}),
            role("prefill", 1, ports=HTTP),
            replicas=2,
        ),
        "-n",
        namespace,
    )
    ss = Served(kubectl, namespace, name, controller)
    ss.wait(ss.settled, "2 RoleSets ready", timeout=240)
    ss.wait(lambda: ss.service("router") is not None and ss.service("worker") is not None, "the two Services")
    assert ss.services() == [name, f"{name}-router", f"{name}-worker"], "none for prefill"

    router = ss.service("router")
    assert router is not None
    assert router["spec"]["type"] == "ClusterIP" and router["spec"]["clusterIP"] not in ("", "None")
    assert router["spec"]["selector"] == {"storm-service-name": name, "role-name": "router"}
    assert router["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    owner = router["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("StormService", name, True)
    worker = ss.service("worker")
    assert worker is not None
    assert worker["spec"]["clusterIP"] == "None"
    assert worker["spec"]["ports"] == [
        {"name": "tcp-9000", "port": 9000, "targetPort": 9000, "protocol": "TCP"}
    ]

    # Exactly that role's pods, in both RoleSets.
    ss.wait(lambda: ss.endpoints_are_the_pods("router"), "router endpoints = the 2 router pods")
    ss.wait(lambda: ss.endpoints_are_the_pods("worker"), "worker endpoints = the 4 worker pods")
    assert len(ss.ready_ips("router")) == 2 and len(ss.ready_ips("worker")) == 4
    assert not ss.endpoints("worker")[1] & ss.ready_ips("prefill")
    assert [(p.get("name"), p["port"]) for p in ss.endpoint_ports("router")] == [("http", 8000)]
    cond = ss.condition()
    assert (cond.get("status"), cond.get("reason")) == ("True", "RoleServicesSynced"), cond
    assert f"{name}-router (ClusterIP)" in cond["message"] and f"{name}-worker (Headless)" in cond["message"]

    # A RollingUpdate rollout: every RoleSet replaced, the Services stay and never go empty.
    router_uid = router["metadata"]["uid"]
    old_pods = {p["metadata"]["uid"] for p in ss.pods()}
    old_routers = {p["metadata"]["uid"] for p in ss.pods("router")}
    revisions = ss.revisions()

    def rolled() -> bool:
        svc = ss.service("router")
        assert svc is not None and svc["metadata"]["uid"] == router_uid, "the router Service was replaced"
        return ss.settled() and not old_pods & {p["metadata"]["uid"] for p in ss.pods()}

    with EndpointSliceWatch(kubectl, namespace, f"{name}-router") as watch:
        ss.patch([
            {"op": "replace", "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image", "value": IMAGE_V2}
            for i in range(3)
        ])  # fmt: skip
        ss.wait(rolled, "the rollout to replace every pod", timeout=300)
        ss.wait(lambda: ss.endpoints_are_the_pods("router"), "router endpoints = the new router pods")
    history = watch.ready_history()
    assert all(history), f"the router Service had no ready endpoint at some point: {history}"
    new_routers = {p["metadata"]["uid"] for p in ss.pods("router")}
    assert history[0] == old_routers and history[-1] == new_routers, "the watch did not see the whole rollout"
    assert not old_routers & new_routers
    assert len(ss.revisions()) == len(revisions) + 1
    ss.wait(lambda: ss.endpoints_are_the_pods("worker"), "worker endpoints = the new worker pods")

    # Editing `service` restarts nothing and makes no revision.
    pods = {p["metadata"]["uid"] for p in ss.pods()}
    revisions = ss.revisions()
    generation = ss.get("stormservice", name)["metadata"]["generation"]
    ss.patch([
        {"op": "add", "path": "/spec/template/spec/roles/0/service/annotations", "value": {"lb.example/internal": "true"}},
        {"op": "add", "path": "/spec/template/spec/roles/1/service/publishNotReadyAddresses", "value": True},
    ])  # fmt: skip

    def edited() -> bool:
        r, w = ss.service("router"), ss.service("worker")
        return (
            r is not None
            and (r["metadata"].get("annotations") or {}).get("lb.example/internal") == "true"
            and w is not None
            and w["spec"].get("publishNotReadyAddresses") is True
        )

    ss.wait(edited, "the Services to take the edit")
    ss.wait(
        lambda: ss.get("stormservice", name)["status"].get("observedGeneration") == generation + 1, "observed"
    )
    assert ss.settled()
    assert {p["metadata"]["uid"] for p in ss.pods()} == pods, "a pod was replaced by a Service edit"
    assert ss.revisions() == revisions

    # ClusterIP -> NodePort in place; NodePort -> Headless deleted and created again.
    ss.patch([{"op": "replace", "path": "/spec/template/spec/roles/0/service/type", "value": "NodePort"}])

    def node_port() -> bool:
        svc = ss.service("router")
        return (
            svc is not None
            and svc["spec"]["type"] == "NodePort"
            and bool(svc["spec"]["ports"][0].get("nodePort"))
        )

    ss.wait(node_port, "the router Service to be a NodePort Service")
    router = ss.service("router")
    assert router is not None and router["metadata"]["uid"] == router_uid, "patched, not recreated"
    ss.patch([{"op": "replace", "path": "/spec/template/spec/roles/0/service/type", "value": "Headless"}])

    def headless() -> bool:
        svc = ss.service("router")
        return svc is not None and svc["spec"].get("clusterIP") == "None"

    ss.wait(headless, "the router Service to be headless")
    router = ss.service("router")
    assert router is not None and router["metadata"]["uid"] != router_uid
    assert (router["metadata"].get("annotations") or {}).get("lb.example/internal") == "true"
    ss.wait(lambda: bool(ss.events("RecreatingService")), "a RecreatingService event", timeout=60)
    ss.wait(lambda: ss.endpoints_are_the_pods("router"), "router endpoints on the headless Service")

    # Removing the field deletes the Service; the other stays.
    ss.patch([{"op": "remove", "path": "/spec/template/spec/roles/1/service"}])
    ss.wait(lambda: ss.service("worker") is None, "the worker Service to go")
    assert ss.services() == [name, f"{name}-router"]
    ss.wait(lambda: bool(ss.events("DeletedService")), "a DeletedService event", timeout=60)
    assert {p["metadata"]["uid"] for p in ss.pods()} == pods
    assert ss.revisions() == revisions
    assert "Traceback" not in controller.log_text()


def test_a_service_someone_else_holds_is_left_alone(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "held"
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{name}-router"},
        "spec": {"selector": {"app": "mine"}, "ports": [{"port": 1234}]},
    }
    kubectl.apply(foreign, "-n", namespace)
    before = kubectl.get_json("service", f"{name}-router", "-n", namespace)
    kubectl.apply(storm(name, role("router", 1, ports=HTTP, service={}), replicas=1), "-n", namespace)
    ss = Served(kubectl, namespace, name, controller)
    ss.wait(ss.settled, "the StormService to be ready (a Service conflict holds up no pod)")
    ss.wait(lambda: ss.condition().get("reason") == "ServiceConflict", "the ServiceConflict condition")
    cond = ss.condition()
    assert cond["status"] == "False" and f"{name}-router" in cond["message"]
    ss.wait(lambda: bool(ss.events("ServiceConflict")), "a ServiceConflict event", timeout=60)
    after = kubectl.get_json("service", f"{name}-router", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "it was written"
    assert not after["metadata"].get("ownerReferences")

    # Once it is gone, ours is made (it was outside the cache: found again on the recheck).
    kubectl("delete", "service", f"{name}-router", "-n", namespace)

    def ours() -> bool:
        svc = ss.service("router")
        return svc is not None and bool(svc["metadata"].get("ownerReferences"))

    ss.wait(ours, "our Service once the other is gone", timeout=180)
    ss.wait(lambda: ss.condition().get("status") == "True", "RoleServicesSynced=True")


def test_an_aibrix_manifest_without_service_makes_only_the_headless_service(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "prefill-decode.yaml"))
    ss = Served(kubectl, namespace, "llama-pd", controller)

    def ready() -> bool:
        status = ss.get("stormservice", "llama-pd").get("status") or {}
        return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or ())

    ss.wait(ready, "llama-pd Ready", timeout=240)
    assert ss.services() == ["llama-pd"], "only the headless Service"
    status = ss.get("stormservice", "llama-pd")["status"]
    assert CONDITION not in {c["type"] for c in status["conditions"]}
    rolesets = ss.get("rolesets", "-l", "storm-service-name=llama-pd")["items"]
    assert all("service" not in r for rs in rolesets for r in rs["spec"]["roles"])
    events = ss.get("events")["items"]
    reasons = {e["reason"] for e in events}
    assert not reasons & {"CreatedService", "ServiceConflict", "NoServicePorts", "ServiceSyncFailed"}
