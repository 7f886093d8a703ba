"""`kubectl storm` on the real control plane, invoked THROUGH kubectl's plugin discovery
(`kubectl storm ...` with the console script `kubectl-storm` on PATH), with the controller running
as a subprocess scoped to the test's namespace.

Whether a rollout finished is judged here from the objects themselves (the StormService's status
for its latest generation, its RoleSets and pods), never from the plugin's own output.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kubectl_storm.errors import CliError
from controller.kubectl_storm.lookup import Target
from controller.kubectl_storm.mutate import RESTARTED_AT_ANNOTATION, json_patch, restart_patch, scale_patch
from controller.runtime.client import KubeClient, Obj
from controller.runtime.resources import STORMSERVICES
from tests.cluster import Kubectl, derived_kubeconfig, service_account_kubeconfig
from tests.storm_reads import StormReads

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

API = "orchestration.aibrix.ai/v1alpha1"
IMAGE_V1 = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"
VENV_BIN = Path(sys.executable).parent
SETTLE = 240.0  # generous: the machine is shared and loaded


def role(name: str, replicas: int, *, inplace: bool = False) -> Obj:
    out: Obj = {
        "name": name,
        "replicas": replicas,
        "template": {
            "metadata": {"labels": {"component": name}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "engine", "image": IMAGE_V1}],
            },
        },
    }
    if inplace:
        out["updateStrategy"] = {"type": "InPlaceIfPossible"}
    return out


def storm(name: str, *, replicas: int = 2, strategy: str = "RollingUpdate", inplace: bool = False) -> Obj:
    update: Obj = {"type": strategy}
    if strategy == "RollingUpdate":
        update.update({"maxSurge": 1, "maxUnavailable": 1})
    return {
        "apiVersion": API,
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": update,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"roles": [role("prefill", 1, inplace=inplace), role("decode", 1, inplace=inplace)]},
            },
        },
    }


def set_image(image: str) -> list[Obj]:
    return [
        {
            "op": "replace",
            "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
            "value": image,
        }
        for i in range(2)
    ]


@dataclass
class Plugin:
    """`kubectl storm` as a user runs it: kubectl finds `kubectl-storm` on PATH."""

    kubectl_bin: str
    kubeconfig: str
    namespace: str

    async def __call__(
        self, *args: str, kubeconfig: str | None = None, namespace: bool = True, limit: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.kubectl_bin, "storm", *args]
        if namespace:
            argv += ["-n", self.namespace]
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": kubeconfig or self.kubeconfig,
        }
        return await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, env=env, timeout=limit, check=False
        )

    async def ok(self, *args: str, **kwargs: Any) -> str:
        proc = await self(*args, **kwargs)
        assert proc.returncode == 0, f"kubectl storm {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
        return proc.stdout

    async def fails(self, *args: str, code: int = 1, **kwargs: Any) -> str:
        """Runs a command that must fail with `code` and one line on stderr; returns that line."""
        proc = await self(*args, **kwargs)
        assert proc.returncode == code, (
            f"kubectl storm {' '.join(args)} exited {proc.returncode}, not {code}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, f"not one line on stderr: {proc.stderr!r}"
        assert "Traceback" not in proc.stderr
        return lines[0]


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = SETTLE) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


@dataclass
class Objects(StormReads):
    kube: KubeClient
    namespace: str

    async def wait_settled(self, name: str) -> Obj:
        result: Obj = await eventually(lambda: self.settled(name), f"{name} to settle")
        return result


@pytest.fixture
def objects(kube: KubeClient, namespace: str) -> Objects:
    return Objects(kube, namespace)


@pytest.fixture
def plugin(kubectl: Kubectl, kubeconfig: str, namespace: str) -> Plugin:
    assert (VENV_BIN / "kubectl-storm").exists(), f"no console script in {VENV_BIN}: run `make install`"
    return Plugin(kubectl.binary, kubeconfig, namespace)


@pytest.fixture
def controller(crds: list[str], namespace: str, run_controller: Any) -> Any:
    return run_controller("--namespace", namespace)


def images(pods: list[Obj]) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in pods}


def uids(pods: list[Obj]) -> set[str]:
    return {p["metadata"]["uid"] for p in pods}


# ---------------------------------------------------------------------------------------------


async def test_status_history_undo_pause_scale_restart(
    plugin: Plugin, objects: Objects, kubectl: Kubectl, namespace: str, controller: Any
) -> None:
    kubectl.apply(storm("pd"), "-n", namespace)
    first = await objects.wait_settled("pd")
    first_template = first["spec"]["template"]

    # status: the table, and the same as data.
    text = await plugin.ok("status", "pd")
    assert re.search(r"^ROLESET\s+ROLE\s+DESIRED\s+READY\s+UPDATED\s+REVISION$", text, re.M), text
    rolesets = sorted(rs["metadata"]["name"] for rs in await objects.rolesets("pd"))
    for rs in rolesets:
        for r in ("prefill", "decode"):
            assert re.search(rf"^{rs}\s+{r}\s+1\s+1\s+1\s+1$", text, re.M), text
    assert re.search(r"^Ready\s+True\s+AllRoleSetsReady\s", text, re.M), text
    assert "Rollout:     complete: " in text, text
    report = json.loads(await plugin.ok("status", "pd", "-o", "json"))
    assert report["rollout"]["state"] == "complete"
    assert report["updateRevision"] == {"name": first["status"]["updateRevision"], "revision": 1}
    assert sorted(
        (r["roleSet"], r["role"], r["desired"], r["ready"], r["updated"], r["revision"])
        for r in report["roles"]
    ) == sorted((rs, r, 1, 1, 1, 1) for rs in rolesets for r in ("prefill", "decode"))
    assert yaml.safe_load(await plugin.ok("status", "pd", "-o", "yaml")) == report

    # A template change, followed to its end by status --watch.
    await objects.kube.patch(STORMSERVICES, namespace, "pd", set_image(IMAGE_V2), patch_type="json")
    watched = await plugin("status", "pd", "--watch", "--timeout", "240s")
    assert watched.returncode == 0, watched.stderr
    assert "successfully rolled out" in watched.stdout
    second = await objects.wait_settled("pd")  # the plugin said so; the objects must agree
    assert second["status"]["updateRevision"] != first["status"]["updateRevision"]
    assert images(await objects.pods("pd")) == {IMAGE_V2}

    # history: two revisions and what changed.
    text = await plugin.ok("history", "pd")
    assert re.search(r"^1\s+\S+\s+\S+\s+<none>$", text, re.M), text
    assert re.search(r"^2\s+\S+\s+\S+\s+current,update\s+<none>$", text, re.M), text
    assert "What changed in revision 2:" in text
    assert f"-        - image: {IMAGE_V1}" in text and f"+        - image: {IMAGE_V2}" in text, text
    entries = json.loads(await plugin.ok("history", "pd", "-o", "json"))
    assert [e["revision"] for e in entries] == [1, 2]
    assert [e["name"] for e in entries] == [r["metadata"]["name"] for r in await objects.revisions("pd")]
    assert IMAGE_V1 in await plugin.ok("history", "pd", "--revision", "1")
    line = await plugin.fails("history", "pd", "--revision", "7")
    assert line == "error: unable to find the specified revision 7 in history"

    # undo: back to revision 1's template, which becomes revision 3.
    assert (await plugin.ok("undo", "pd")).strip() == "stormservice.orchestration.aibrix.ai/pd rolled back"
    assert (await objects.ss("pd"))["spec"]["template"] == first_template
    third = await objects.wait_settled("pd")
    assert third["status"]["updateRevision"] == first["status"]["updateRevision"]
    assert images(await objects.pods("pd")) == {IMAGE_V1}
    assert [int(r["revision"]) for r in await objects.revisions("pd")] == [2, 3]
    out = await plugin.ok("undo", "pd", "--to-revision", "3")
    assert out.strip() == (
        "stormservice.orchestration.aibrix.ai/pd skipped rollback (current template already matches revision 3)"
    )
    line = await plugin.fails("undo", "pd", "--to-revision", "1")
    assert line == "error: unable to find the specified revision 1 in history"

    # pause: a template change waits; status --watch says it is paused (exit 3); resume finishes it.
    assert (await plugin.ok("pause", "pd")).strip() == "stormservice.orchestration.aibrix.ai/pd paused"
    assert (await objects.ss("pd"))["spec"]["paused"] is True
    assert (
        await plugin.ok("pause", "pd")
    ).strip() == "stormservice.orchestration.aibrix.ai/pd already paused"
    before = uids(await objects.pods("pd"))
    await objects.kube.patch(STORMSERVICES, namespace, "pd", set_image(IMAGE_V2), patch_type="json")
    paused = await plugin("status", "pd", "--watch", "--timeout", "120s")
    assert paused.returncode == 3, (paused.stdout, paused.stderr)
    assert "rollout paused" in paused.stderr
    assert uids(await objects.pods("pd")) == before
    assert (await plugin.ok("resume", "pd")).strip() == "stormservice.orchestration.aibrix.ai/pd resumed"
    assert (await objects.ss("pd"))["spec"]["paused"] is False
    assert (
        await plugin.ok("resume", "pd")
    ).strip() == "stormservice.orchestration.aibrix.ai/pd already resumed"
    resumed = await plugin("status", "pd", "--watch", "--timeout", "240s")
    assert resumed.returncode == 0, resumed.stderr
    await objects.wait_settled("pd")
    assert images(await objects.pods("pd")) == {IMAGE_V2}

    # scale one role.
    assert (await plugin.ok("scale", "pd", "--role", "decode", "--replicas", "2")).strip() == (
        "stormservice.orchestration.aibrix.ai/pd scaled"
    )
    roles = {r["name"]: r["replicas"] for r in (await objects.ss("pd"))["spec"]["template"]["spec"]["roles"]}
    assert roles == {"prefill": 1, "decode": 2}
    await objects.wait_settled("pd")
    decode = [p for p in await objects.pods("pd") if p["metadata"]["labels"].get("role-name") == "decode"]
    assert len(decode) == 4
    line = await plugin.fails("scale", "pd", "--role", "router", "--replicas", "1")
    assert line == 'error: stormservice "pd" has no role "router" (roles: prefill, decode)'
    line = await plugin.fails("scale", "pd", "--role", "decode", "--replicas", "-1")
    assert line.startswith("error: argument --replicas: must be 0 or more"), line

    # restart: every pod is recreated, by a new revision.
    before = uids(await objects.pods("pd"))
    revision = (await objects.ss("pd"))["status"]["updateRevision"]
    assert (await plugin.ok("restart", "pd")).strip() == "stormservice.orchestration.aibrix.ai/pd restarted"
    restarted = await objects.wait_settled("pd")
    assert restarted["status"]["updateRevision"] != revision
    after = await objects.pods("pd")
    assert not (uids(after) & before), "pods survived the restart"
    assert all("kubectl.kubernetes.io/restartedAt" in p["metadata"].get("annotations", {}) for p in after)

    # no such object: one line, exit 1.
    line = await plugin.fails("status", "nosuch")
    assert line == 'Error from server (NotFound): stormservices.orchestration.aibrix.ai "nosuch" not found'


async def test_restart_recreates_pods_under_inplace_update(
    plugin: Plugin, objects: Objects, kubectl: Kubectl, namespace: str, controller: Any
) -> None:
    """InPlaceUpdate rewrites the RoleSets and InPlaceIfPossible roles patch images in place;
    a restart must still give every role new pods (the annotation is not an image change)."""
    kubectl.apply(storm("ip", strategy="InPlaceUpdate", inplace=True), "-n", namespace)
    first = await objects.wait_settled("ip")
    rolesets = {rs["metadata"]["uid"] for rs in await objects.rolesets("ip")}
    before = uids(await objects.pods("ip"))
    assert (await plugin.ok("restart", "ip")).strip() == "stormservice.orchestration.aibrix.ai/ip restarted"
    watched = await plugin("status", "ip", "--watch", "--timeout", "240s")
    assert watched.returncode == 0, watched.stderr
    after = await objects.wait_settled("ip")
    assert after["status"]["updateRevision"] != first["status"]["updateRevision"]
    assert {rs["metadata"]["uid"] for rs in await objects.rolesets("ip")} == rolesets, (
        "RoleSets were replaced"
    )
    pods = await objects.pods("ip")
    assert not (uids(pods) & before), "pods survived the restart"
    assert all("kubectl.kubernetes.io/restartedAt" in p["metadata"].get("annotations", {}) for p in pods)


async def test_status_watch_exits_2_on_a_stalled_rollout(
    plugin: Plugin, objects: Objects, kubectl: Kubectl, namespace: str, controller: Any
) -> None:
    kubectl.apply(storm("bad", replicas=1), "-n", namespace)
    await objects.wait_settled("bad")
    # The CRD admits it, the API server refuses its pods: Progressing=False, RolloutBlocked.
    broken = [
        *set_image(IMAGE_V2),
        {
            "op": "add",
            "path": "/spec/template/spec/roles/1/template/spec/containers/0/volumeMounts",
            "value": [{"name": "missing", "mountPath": "/data"}],
        },
    ]
    await objects.kube.patch(STORMSERVICES, namespace, "bad", broken, patch_type="json")
    stalled = await plugin("status", "bad", "--watch", "--timeout", "240s")
    assert stalled.returncode == 2, (stalled.stdout, stalled.stderr)
    assert len(stalled.stderr.splitlines()) == 1, stalled.stderr
    assert "rollout stalled: RolloutBlocked" in stalled.stderr and "InvalidPodTemplate" in stalled.stderr
    ss = await objects.ss("bad")
    progressing = next(c for c in ss["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "False"
    text = await plugin.ok("status", "bad")
    assert "Rollout:     stalled: RolloutBlocked" in text, text


def two_contexts(admin_kubeconfig: str, namespace: str, path: Path) -> Path:
    """The admin kubeconfig with context `here` (namespace `namespace`, the current one) and
    context `elsewhere` (no namespace)."""
    config = yaml.safe_load(Path(admin_kubeconfig).read_text())
    ctx = config["contexts"][0]["context"]
    config["contexts"] = [
        {"name": "here", "context": {**ctx, "namespace": namespace}},
        {"name": "elsewhere", "context": {k: v for k, v in ctx.items() if k != "namespace"}},
    ]
    config["current-context"] = "here"
    path.write_text(json.dumps(config))
    return path


async def test_errors_are_one_line_with_exit_1(
    plugin: Plugin, kubectl: Kubectl, kubeconfig: str, namespace: str, crds: list[str], tmp_path: Path
) -> None:
    # No cluster: a kubeconfig naming a port nothing listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = derived_kubeconfig(kubeconfig, tmp_path / "closed", server=f"https://127.0.0.1:{port}")
    line = await plugin.fails("status", "pd", kubeconfig=str(closed))
    assert line.startswith(f"error: cannot reach the cluster at https://127.0.0.1:{port}: "), line
    line = await plugin.fails("status", "pd", kubeconfig=str(tmp_path / "missing"))
    assert line.startswith("error: no kubeconfig at "), line

    # Forbidden: a ServiceAccount with no rights on StormServices.
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    denied = service_account_kubeconfig(kubectl, kubeconfig, namespace, "nobody", rules, tmp_path / "denied")
    line = await plugin.fails("status", "pd", kubeconfig=str(denied))
    assert line.startswith(
        'Error from server (Forbidden): stormservices.orchestration.aibrix.ai "pd" is forbidden: '
    ), line
    assert f"system:serviceaccount:{namespace}:nobody" in line
    line = await plugin.fails("pause", "pd", kubeconfig=str(denied))
    assert line.startswith("Error from server (Forbidden): "), line

    # The namespace defaults to the context's; --context picks another context.
    kubectl.apply(storm("here", replicas=1), "-n", namespace)
    scoped = two_contexts(kubeconfig, namespace, tmp_path / "scoped")
    text = await plugin.ok("status", "here", kubeconfig=str(scoped), namespace=False)
    assert text.startswith(f"Name:        here\nNamespace:   {namespace}\n"), text
    line = await plugin.fails(
        "status", "here", "--context", "elsewhere", kubeconfig=str(scoped), namespace=False
    )
    assert line == 'Error from server (NotFound): stormservices.orchestration.aibrix.ai "here" not found'
    line = await plugin.fails(
        "status", "here", "--context", "nowhere", kubeconfig=str(scoped), namespace=False
    )
    assert line == 'error: context "nowhere" does not exist'

    # No controller runs here, so the rollout never moves: --timeout ends the watch, exit 1.
    line = await plugin.fails("status", "here", "--watch", "--timeout", "3s")
    assert line == (
        "error: timed out waiting for the rollout of stormservice.orchestration.aibrix.ai/here "
        "(waiting for the controller to observe generation 1 (observed: 0))"
    ), line


async def test_a_concurrent_edit_fails_the_write_instead_of_being_overwritten(
    objects: Objects, kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    """The patches are built from the object as read; an edit in between must make the API
    server refuse them (no controller needed: this is between the plugin and the API server)."""
    kubectl.apply(storm("race"), "-n", namespace)
    stale = await objects.ss("race")
    target = Target(objects.kube, namespace, "race")
    # Someone swaps the roles after we read: scaling "decode" at its old index would hit prefill.
    roles = stale["spec"]["template"]["spec"]["roles"]
    swapped = [{"op": "replace", "path": "/spec/template/spec/roles", "value": [roles[1], roles[0]]}]
    await objects.kube.patch(STORMSERVICES, namespace, "race", swapped, patch_type="json")
    scale = scale_patch(stale, "decode", 5)
    assert scale is not None
    with pytest.raises(CliError, match="was changed while this command ran"):
        await json_patch(target, scale, stale)
    restart = restart_patch(stale, "2026-12-01T08:00:00Z")
    with pytest.raises(CliError, match="was changed while this command ran"):
        await json_patch(target, restart, stale)
    now = await objects.ss("race")
    assert now["spec"]["template"]["spec"]["roles"] == [roles[1], roles[0]]
    # Read afresh, the same writes go through.
    fresh_scale = scale_patch(now, "decode", 5)
    assert fresh_scale is not None
    await json_patch(target, fresh_scale, now)
    now = await objects.ss("race")
    await json_patch(target, restart_patch(now, "2026-12-01T08:00:00Z"), now)
    final = (await objects.ss("race"))["spec"]["template"]["spec"]["roles"]
    assert [(r["name"], r["replicas"]) for r in final] == [("decode", 5), ("prefill", 1)]
    assert all(r["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION] for r in final)
