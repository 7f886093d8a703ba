"""The runtime's helpers against a real kube-apiserver: controller references (adopt and release
with uid preconditions, strategic and JSON flavours), ControllerRevisions (create, collision,
renumber, delete), Lease leader election (in process, and between two controller processes),
and the event recorder's aggregation. Also pins the server behaviour FakeClient mirrors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from typing import Any

import pytest

from controller.runtime.client import ApiClient, Obj
from controller.runtime.controllerref import (
    adopt_object,
    adopt_patch,
    controller_ref,
    new_controller_ref,
    release_object,
    release_patch,
)
from controller.runtime.errors import Conflict, Invalid, NotFound
from controller.runtime.events import EventRecorder
from controller.runtime.leaderelection import LeaderElector
from controller.runtime.resources import CONTROLLER_REVISIONS, EVENTS, LEASES, PODS, Resource
from controller.runtime.revision import (
    KubeRevisionHistory,
    create_revision,
    hash_revision_data,
    new_revision,
    update_revision_number,
)
from tests.cluster import ControllerFactory, ControllerProcess
from tests.unit.runtime.test_fake import OWNER_REFERENCE_STEPS

pytestmark = pytest.mark.integration

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
IMAGE = "registry.k8s.io/pause:3.10"

# Upper bounds only: a loaded machine can be slow.
PATIENCE = 60


async def configmap(kube: ApiClient, namespace: str, name: str) -> Obj:
    return await kube.create(CONFIGMAPS, namespace, {"metadata": {"name": name}})


async def pod(kube: ApiClient, namespace: str, name: str, refs: list[dict[str, Any]]) -> Obj:
    body = {
        "metadata": {"name": name, "ownerReferences": refs},
        "spec": {"containers": [{"name": "c", "image": IMAGE}]},
    }
    return await kube.create(PODS, namespace, body)


def plain_ref(owner: Obj, kind: str = "ConfigMap") -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": "v1", "kind": kind, "name": meta["name"], "uid": meta["uid"]}


def with_uid(obj: Obj, uid: str) -> Obj:
    return {**obj, "metadata": {**obj["metadata"], "uid": uid}}


# --- controller references --------------------------------------------------------------------------


async def test_strategic_adopt_and_release_keep_other_references(kube: ApiClient, namespace: str) -> None:
    owner = await configmap(kube, namespace, "owner")
    other = await configmap(kube, namespace, "other")
    orphan = await pod(kube, namespace, "p", [plain_ref(other)])
    ref = new_controller_ref(owner, "v1", "ConfigMap")

    adopted = await adopt_object(kube, PODS, orphan, ref)
    assert controller_ref(adopted) == ref
    assert adopted["metadata"]["ownerReferences"] == [ref, plain_ref(other)]

    released = await release_object(kube, PODS, adopted, owner["metadata"]["uid"])
    assert released is not None and controller_ref(released) is None
    assert released["metadata"]["ownerReferences"] == [plain_ref(other)]
    # Nothing of ours left: no request at all.
    assert await release_object(kube, PODS, released, owner["metadata"]["uid"]) is None


async def test_uid_preconditions_fail_as_invalid_on_patches(kube: ApiClient, namespace: str) -> None:
    """An object deleted and re-created under the same name is not adopted nor released: the
    uid in the patch body makes the server refuse with 422 (metadata.uid is immutable)."""
    owner = await configmap(kube, namespace, "owner")
    seen = await pod(kube, namespace, "p", [])
    stale = with_uid(seen, str(uuid.uuid4()))
    ref = new_controller_ref(owner, "v1", "ConfigMap")

    with pytest.raises(Invalid) as err:
        await adopt_object(kube, PODS, stale, ref)
    assert err.value.code == 422 and "metadata.uid" in [c.field for c in err.value.causes]

    adopted = await adopt_object(kube, PODS, seen, ref)
    assert (
        await release_object(kube, PODS, with_uid(adopted, str(uuid.uuid4())), owner["metadata"]["uid"])
        is None
    )
    current = await kube.get(PODS, namespace, "p")
    assert controller_ref(current) == ref, "a release aimed at another uid changed the pod"


async def test_patch_and_update_status_codes_that_fake_client_mirrors(
    kube: ApiClient, namespace: str
) -> None:
    created = await configmap(kube, namespace, "a")
    other_uid = str(uuid.uuid4())
    patches: list[tuple[str, Any]] = [
        ("merge", {"metadata": {"uid": other_uid, "labels": {"x": "1"}}}),
        ("strategic", {"metadata": {"uid": other_uid, "labels": {"x": "1"}}}),
        ("json", [{"op": "replace", "path": "/metadata/uid", "value": other_uid}]),
    ]
    for patch_type, patch in patches:
        with pytest.raises(Invalid) as err:
            await kube.patch(CONFIGMAPS, namespace, "a", patch, patch_type=patch_type)  # type: ignore[arg-type]
        assert [c.field for c in err.value.causes][:1] == ["metadata.uid"], patch_type
    with pytest.raises(Invalid):
        await kube.patch(
            CONFIGMAPS,
            namespace,
            "a",
            [{"op": "test", "path": "/metadata/uid", "value": other_uid}],
            patch_type="json",
        )
    unchanged = {
        **created,
        "metadata": {k: v for k, v in created["metadata"].items() if k != "resourceVersion"},
    }
    with pytest.raises(Conflict):
        await kube.replace(CONFIGMAPS, namespace, "a", with_uid(unchanged, other_uid))
    with pytest.raises(Conflict):
        await kube.delete(CONFIGMAPS, namespace, "a", uid_precondition=other_uid)


async def test_strategic_owner_reference_merge_matches_the_fake(kube: ApiClient, namespace: str) -> None:
    """The table FakeClient's unit test replays, against the server. Every uid names a real
    object (else the garbage collector would edit the list under the test); "e2" shares its
    name with "e", so it is a Secret."""
    uids: dict[str, str] = {}
    for key in ("b", "c", "d", "e", "missing"):
        uids[key] = (await configmap(kube, namespace, key))["metadata"]["uid"]
    secret = await kube.create(SECRETS, namespace, {"metadata": {"name": "e"}})
    uids["e2"] = secret["metadata"]["uid"]
    keys = {uid: key for key, uid in uids.items()}
    await configmap(kube, namespace, "target")

    def real(ref: dict[str, Any]) -> dict[str, Any]:
        if "uid" not in ref:
            return ref  # a directive such as {"$patch": "replace"}
        out = {**ref, "uid": uids[ref["uid"]]}
        if ref["uid"] == "e2":
            out["kind"] = "Secret"
        return out

    for step, refs, want in OWNER_REFERENCE_STEPS:
        got = await kube.patch(
            CONFIGMAPS,
            namespace,
            "target",
            {"metadata": {"ownerReferences": [real(r) for r in refs]}},
            patch_type="strategic",
        )
        seen = [
            (r["name"], keys[r["uid"]], r.get("controller"))
            for r in got["metadata"].get("ownerReferences") or []
        ]
        assert seen == want, step
    stored = await kube.get(CONFIGMAPS, namespace, "target")
    assert "ownerReferences" not in stored["metadata"]


async def test_json_adopt_and_release_test_what_they_saw(kube: ApiClient, namespace: str) -> None:
    """The JSON patch flavour (what custom resources get), on a pod."""
    owner = await configmap(kube, namespace, "owner")
    seen = await pod(kube, namespace, "p", [])
    ref = new_controller_ref(owner, "v1", "ConfigMap")

    ops, patch_type = adopt_patch(seen, ref, strategic=False)
    adopted = await kube.patch(PODS, namespace, "p", ops, patch_type=patch_type)
    assert controller_ref(adopted) == ref
    with pytest.raises(Invalid):  # the list is no longer absent, as the patch tests
        await kube.patch(PODS, namespace, "p", ops, patch_type=patch_type)
    other = await configmap(kube, namespace, "other")
    with_other = await kube.patch(
        PODS, namespace, "p", {"metadata": {"ownerReferences": [plain_ref(other)]}}, patch_type="strategic"
    )
    ops, patch_type = adopt_patch(adopted, ref, strategic=False)  # a stale view: one reference
    with pytest.raises(Invalid):
        await kube.patch(PODS, namespace, "p", ops, patch_type=patch_type)
    assert (await kube.get(PODS, namespace, "p"))["metadata"]["ownerReferences"] == with_other["metadata"][
        "ownerReferences"
    ]
    adopted = with_other

    built = release_patch(adopted, owner["metadata"]["uid"], strategic=False)
    assert built is not None
    released = await kube.patch(PODS, namespace, "p", built[0], patch_type=built[1])
    assert controller_ref(released) is None
    with pytest.raises(Invalid):
        await kube.patch(PODS, namespace, "p", built[0], patch_type=built[1])


# --- revisions -------------------------------------------------------------------------------------


async def test_revisions_create_collide_renumber_and_delete(kube: ApiClient, namespace: str) -> None:
    owner = await configmap(kube, namespace, "owner")
    data = {"spec": {"template": {"x": 1}, "$patch": "replace"}}
    rev = new_revision(owner, "v1", "ConfigMap", "owner", data, 1, 0, {"name": "owner"})
    created, collisions = await create_revision(kube, namespace, rev, 0)
    assert collisions == 0 and created["metadata"]["name"] == "owner-" + hash_revision_data(data, 0)
    assert created["data"] == data and controller_ref(created) is not None
    again, collisions = await create_revision(kube, namespace, rev, 0)
    assert collisions == 0 and again["metadata"]["uid"] == created["metadata"]["uid"]

    data2 = {"spec": {"other": 2}}
    rev2 = new_revision(owner, "v1", "ConfigMap", "owner", data2, 2, 0)
    await kube.create(CONTROLLER_REVISIONS, namespace, {**rev2, "data": {"squatter": True}})
    clash, collisions = await create_revision(kube, namespace, rev2, 0)
    assert collisions == 1
    assert clash["metadata"]["name"] == "owner-" + hash_revision_data(data2, 1) and clash["data"] == data2

    renumbered = await update_revision_number(kube, created, 5)
    assert renumbered["revision"] == 5 and renumbered["data"] == data
    with pytest.raises(Invalid):
        await update_revision_number(kube, with_uid(created, str(uuid.uuid4())), 6)

    history = KubeRevisionHistory(kube, lambda _: [])
    with pytest.raises(Conflict):  # a DELETE's uid precondition is a 409
        await history.delete_revision(with_uid(renumbered, str(uuid.uuid4())))
    await history.delete_revision(renumbered)
    await history.delete_revision(renumbered)  # already gone: not an error
    with pytest.raises(NotFound):
        await kube.get(CONTROLLER_REVISIONS, namespace, created["metadata"]["name"])


# --- leader election -------------------------------------------------------------------------------


def elector(kube: ApiClient, namespace: str, identity: str) -> LeaderElector:
    return LeaderElector(
        kube, namespace, "lease", identity, lease_duration=3, renew_deadline=2, retry_period=0.2
    )


async def test_lease_acquire_renew_release_takeover(kube: ApiClient, namespace: str) -> None:
    a, b = elector(kube, namespace, "a"), elector(kube, namespace, "b")
    assert await a.try_acquire_or_renew()
    first = await kube.get(LEASES, namespace, "lease")
    assert await a.try_acquire_or_renew()
    renewed = await kube.get(LEASES, namespace, "lease")
    assert renewed["spec"]["holderIdentity"] == "a" and renewed["spec"]["leaseDurationSeconds"] == 3
    assert renewed["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert renewed["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert not await b.try_acquire_or_renew()
    assert b.leader == "a"

    assert await a.release()
    released = await kube.get(LEASES, namespace, "lease")
    assert released["spec"]["holderIdentity"] == "" and released["spec"]["leaseDurationSeconds"] == 1
    assert await b.try_acquire_or_renew()
    taken = await kube.get(LEASES, namespace, "lease")
    assert taken["spec"]["holderIdentity"] == "b" and taken["spec"]["leaseTransitions"] == 1


async def test_a_candidate_waits_out_an_unrenewed_lease(kube: ApiClient, namespace: str) -> None:
    a, b = elector(kube, namespace, "a"), elector(kube, namespace, "b")
    assert await b.try_acquire_or_renew()  # b holds it and then stops renewing
    led = asyncio.Event()

    async def lead() -> None:
        led.set()
        assert await kube.get(LEASES, namespace, "lease")

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(a.run(lead, lambda: None), PATIENCE)
    assert led.is_set()
    # Not before b's lease ran out on our clock (3 s from when a first saw it).
    assert loop.time() - started >= 3
    lease = await kube.get(LEASES, namespace, "lease")
    assert lease["spec"]["holderIdentity"] == ""  # a released it when lead() returned
    assert lease["spec"]["leaseTransitions"] == 1


# --- events ----------------------------------------------------------------------------------------


async def test_event_recorder_creates_then_aggregates_by_patch(kube: ApiClient, namespace: str) -> None:
    subject = await configmap(kube, namespace, "subject")
    recorder = EventRecorder(kube, "stormservice-controller", host="test")
    await recorder.start()
    try:
        recorder.event(subject, "Warning", "Check", "hello")
        await recorder.flush()
        first = [e for e in (await kube.list(EVENTS, namespace))["items"] if e.get("reason") == "Check"]
        assert len(first) == 1 and first[0]["count"] == 1
        recorder.event(subject, "Warning", "Check", "hello")
        await recorder.flush()
    finally:
        await recorder.stop()
    events = [e for e in (await kube.list(EVENTS, namespace))["items"] if e.get("reason") == "Check"]
    assert len(events) == 1, events
    event = events[0]
    assert event["metadata"]["uid"] == first[0]["metadata"]["uid"] and event["count"] == 2
    assert event["involvedObject"]["uid"] == subject["metadata"]["uid"]
    assert event["source"] == {"component": "stormservice-controller", "host": "test"}


# --- two controller processes ----------------------------------------------------------------------

LEASE_NAME = "stormservice-controller-test"


def identity_of(proc: ControllerProcess, timeout: float) -> str:
    line = proc.wait_for_log(re.compile(r'"event": ?"became leader"'), timeout=timeout)
    identity: str = json.loads(line)["identity"]
    return identity


async def test_standby_controller_takes_over_from_a_terminated_leader(
    run_controller: ControllerFactory, kube: ApiClient, namespace: str, crds: list[str]
) -> None:
    # A lease far longer than a takeover after a release takes: the standby taking over while
    # the lease is still fresh shows the leader released it rather than let it expire, and the
    # watch below shows the empty holder in between.
    args = (
        "--namespace",
        namespace,
        "--leader-elect=true",
        f"--leader-elect-namespace={namespace}",
        f"--leader-elect-id={LEASE_NAME}",
        "--leader-elect-lease-duration=90s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=0.5s",
    )
    first = run_controller(*args, name="first")
    first_id = await asyncio.to_thread(identity_of, first, PATIENCE)
    second = run_controller(*args, name="second")
    await asyncio.to_thread(second.wait_for_log, "lease held by another candidate", PATIENCE)

    lease = await kube.get(LEASES, namespace, LEASE_NAME)
    assert lease["spec"]["holderIdentity"] == first_id
    assert lease["spec"]["leaseDurationSeconds"] == 90
    assert "became leader" not in second.log_text()

    holders: list[str] = []

    async def watch_holders() -> None:
        async for event in kube.watch(
            LEASES,
            namespace,
            resource_version=lease["metadata"]["resourceVersion"],
            field_selector=f"metadata.name={LEASE_NAME}",
            allow_bookmarks=False,
        ):
            holder = event["object"].get("spec", {}).get("holderIdentity") or ""
            if not holders or holders[-1] != holder:
                holders.append(holder)

    watcher = asyncio.create_task(watch_holders())
    try:
        assert await asyncio.to_thread(first.stop, PATIENCE) == 0
        assert "released the lease" in first.log_text()
        second_id = await asyncio.to_thread(identity_of, second, PATIENCE)
        assert second_id != first_id
        lease = await kube.get(LEASES, namespace, LEASE_NAME)
        assert lease["spec"]["holderIdentity"] == second_id
        assert lease["spec"]["leaseTransitions"] == 1
        for _ in range(int(PATIENCE / 0.05)):
            if holders and holders[-1] == second_id:
                break
            await asyncio.sleep(0.05)
        assert holders[-2:] == ["", second_id], holders
        assert second.alive()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
