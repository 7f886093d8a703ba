"""Wiring of the StormService controller: informers, event handlers (object → StormService key),
expectations, and the Reconciler the manager runs.

Handlers only map objects to keys and record what they observe for expectations; all decisions
are in `sync.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apis.v1alpha1 import constants as c
from controller.runtime.client import KubeClient, Obj, object_key
from controller.runtime.controllerref import controller_ref
from controller.runtime.expectations import ControllerExpectations
from controller.runtime.informer import DeletedFinalStateUnknown, FuncHandler, InformerFactory
from controller.runtime.loop import Reconciler
from controller.runtime.manager import Manager
from controller.runtime.resources import (
    CONTROLLER_REVISIONS,
    POD_DISRUPTION_BUDGETS,
    ROLE_SCALERS,
    ROLESETS,
    SERVICES,
    STORMSERVICES,
)
from controller.runtime.revision import HASH_LABEL, KubeRevisionHistory, RevisionHistory
from controller.runtime.statusbatch import STATUS_BATCH_SECONDS, StatusBatcher
from controller.runtime.store import INDEX_CONTROLLER_UID, INDEX_NAMESPACE, Store
from controller.runtime.workqueue import RateLimitingQueue
from controller.stormservice.pdb import desired_pdbs
from controller.stormservice.rolescaler import KubeRoleScalerControl, RoleScalerSync
from controller.stormservice.roleservice import role_service_names
from controller.stormservice.rolesetcontrol import KubeRoleSetControl, RoleSetControl
from controller.stormservice.sync import (
    INDEX_ORPHAN_BY_STORM_SERVICE,
    Recorder,
    StormServiceSync,
    orphan_index,
)

CONTROLLER_NAME = "stormservice"
REVISION_SELECTOR = f"{c.LABEL_CONTROLLER_REVISION_NAME},{HASH_LABEL}"


INDEX_ORPHAN_REVISION_BY_NAME = "orphan-revision-by-stormservice"


def orphan_revision_index(obj: Obj) -> list[str]:
    """namespace/name of the StormService an orphan ControllerRevision's name label points at."""
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(c.LABEL_CONTROLLER_REVISION_NAME)
    if not name or controller_ref(obj) is not None:
        return []
    return [f"{meta.get('namespace') or ''}/{name}"]


def revision_candidates(store: Store, owner: Mapping[str, Any]) -> list[Obj]:
    """The cached revisions a StormService may own: those it controls, and orphans labelled
    with its name (the only orphans _claim_revisions adopts)."""
    meta = owner["metadata"]
    namespace = meta.get("namespace") or ""
    owned = [
        r for r in store.by_index(INDEX_CONTROLLER_UID, meta["uid"]) if _meta(r).get("namespace") == namespace
    ]
    return owned + store.by_index(INDEX_ORPHAN_REVISION_BY_NAME, f"{namespace}/{meta['name']}")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _unwrap(obj: Obj | DeletedFinalStateUnknown) -> Obj:
    return obj.obj if isinstance(obj, DeletedFinalStateUnknown) else obj


class StormServiceController:
    """The Reconciler: `name`, `queue`, `sync(key)`."""

    def __init__(
        self,
        *,
        client: KubeClient,
        informers: InformerFactory,
        recorder: Recorder,
        control: RoleSetControl | None = None,
        history: RevisionHistory | None = None,
        status_batch: StatusBatcher | None = None,
    ) -> None:
        self._queue = RateLimitingQueue(CONTROLLER_NAME)
        self.expectations = ControllerExpectations()
        ss_informer = informers.informer(STORMSERVICES)
        rs_informer = informers.informer(ROLESETS)
        # Only our kinds of objects, selected by the labels we give them, rather than every
        # revision, Service and PDB of the cluster (StatefulSets alone keep ten revisions each,
        # with their whole pod templates). AIBrix's revisions carry the same two labels.
        cr_informer = informers.informer(CONTROLLER_REVISIONS, label_selector=REVISION_SELECTOR)
        svc_informer = informers.informer(SERVICES, label_selector=c.LABEL_STORM_SERVICE_NAME)
        pdb_informer = informers.informer(POD_DISRUPTION_BUDGETS, label_selector=c.LABEL_STORM_SERVICE_NAME)
        scaler_informer = informers.informer(ROLE_SCALERS, label_selector=c.LABEL_STORM_SERVICE_NAME)
        rs_informer.store.add_indexers({INDEX_ORPHAN_BY_STORM_SERVICE: orphan_index})
        self.stormservices: Store = ss_informer.store
        cr_store = cr_informer.store
        cr_store.add_indexers({INDEX_ORPHAN_REVISION_BY_NAME: orphan_revision_index})
        self.syncer = StormServiceSync(
            client=client,
            stormservices=ss_informer.store,
            rolesets=rs_informer.store,
            services=svc_informer.store,
            pdbs=pdb_informer.store,
            history=history
            or KubeRevisionHistory(
                client,
                lambda ns: cr_store.by_index(INDEX_NAMESPACE, ns),
                candidates=lambda owner: revision_candidates(cr_store, owner),
            ),
            control=control or KubeRoleSetControl(client),
            recorder=recorder,
            expectations=self.expectations,
            scalers=RoleScalerSync(scaler_informer.store, KubeRoleScalerControl(client), recorder),
            status_batch=status_batch,
        )
        ss_informer.add_event_handler(
            FuncHandler(
                on_add=self._enqueue,
                on_update=lambda _old, new: self._enqueue(new),
                on_delete=lambda obj: self._enqueue(_unwrap(obj)),
            )
        )
        rs_informer.add_event_handler(
            FuncHandler(
                on_add=self._roleset_added, on_update=self._roleset_updated, on_delete=self._roleset_deleted
            )
        )
        cr_informer.add_event_handler(
            FuncHandler(
                on_add=self._owned_changed,
                on_update=lambda old, new: self._owned_changed(new, old),
                on_delete=lambda obj: self._owned_changed(_unwrap(obj)),
            )
        )
        # A RoleScaler's spec.replicas (kubectl scale, an HPA) is applied by its StormService.
        scaler_informer.add_event_handler(
            FuncHandler(
                on_add=self._owned_changed,
                on_update=lambda old, new: self._owned_changed(new, old),
                on_delete=lambda obj: self._owned_changed(_unwrap(obj)),
            )
        )
        svc_informer.add_event_handler(
            FuncHandler(
                on_add=self._service_changed,
                on_update=self._service_updated,
                on_delete=lambda obj: self._service_changed(_unwrap(obj)),
            )
        )
        pdb_informer.add_event_handler(
            FuncHandler(
                on_add=self._pdb_changed,
                on_update=self._pdb_updated,
                on_delete=self._pdb_deleted,
            )
        )

    # --- Reconciler --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return CONTROLLER_NAME

    @property
    def queue(self) -> RateLimitingQueue:
        return self._queue

    async def sync(self, key: str) -> float | None:
        return await self.syncer.sync(key)

    # --- mapping objects to keys -------------------------------------------------------------------

    def _enqueue(self, obj: Obj) -> None:
        self._queue.add(object_key(obj))

    def _owner_key(self, obj: Obj) -> str | None:
        """The key of the StormService controlling `obj`, if it is one we know (same uid)."""
        ref = controller_ref(obj)
        if ref is None or ref.get("kind") != c.KIND_STORM_SERVICE:
            return None
        if str(ref.get("apiVersion", "")).split("/")[0] != c.GROUP:
            return None
        key = f"{_meta(obj).get('namespace')}/{ref.get('name')}"
        owner = self.stormservices.get(key)
        if owner is not None and _meta(owner).get("uid") == ref.get("uid"):
            return key
        return None

    def _adopter_key(self, obj: Obj) -> str | None:
        """An orphan labelled with a StormService name: that StormService may adopt it."""
        meta = _meta(obj)
        name = (meta.get("labels") or {}).get(c.LABEL_STORM_SERVICE_NAME) or (meta.get("labels") or {}).get(
            c.LABEL_CONTROLLER_REVISION_NAME
        )
        if controller_ref(obj) is not None or not name:
            return None
        key = f"{meta.get('namespace')}/{name}"
        return key if self.stormservices.get(key) is not None else None

    def _roleset_added(self, obj: Obj) -> None:
        if _meta(obj).get("deletionTimestamp"):
            # Seen for the first time already terminating (e.g. after a restart): a deletion.
            self._roleset_deleted(obj)
            return
        key = self._owner_key(obj)
        if key is not None:
            self.expectations.creation_observed(key)
            self._queue.add(key)
        elif (adopter := self._adopter_key(obj)) is not None:
            self._queue.add(adopter)

    def _roleset_updated(self, old: Obj, new: Obj) -> None:
        if _meta(old).get("resourceVersion") == _meta(new).get("resourceVersion"):
            return  # a resync: nothing changed
        key = self._owner_key(new)
        if (
            key is not None
            and _meta(new).get("deletionTimestamp")
            and not _meta(old).get("deletionTimestamp")
        ):
            self.expectations.deletion_observed(key, object_key(new))
        old_key = self._owner_key(old)
        if old_key is not None and old_key != key:
            self._queue.add(old_key)  # released or re-owned: the old owner recounts
        if key is not None:
            self._queue.add(key)
        elif (adopter := self._adopter_key(new)) is not None:
            self._queue.add(adopter)

    def _roleset_deleted(self, obj: Obj | DeletedFinalStateUnknown) -> None:
        rs = _unwrap(obj)
        self.syncer.fence.forget(str(_meta(rs).get("uid") or ""))
        key = self._owner_key(rs)
        if key is not None:
            self.expectations.deletion_observed(key, object_key(rs))
            self._queue.add(key)

    def _owned_changed(self, obj: Obj, old: Obj | None = None) -> None:
        for candidate in (obj, old):
            if candidate is None:
                continue
            key = self._owner_key(candidate) or self._adopter_key(candidate)
            if key is not None:
                self._queue.add(key)

    def _pdb_changed(self, obj: Obj) -> None:
        key = self._owner_key(obj)
        if key is not None:
            self._queue.add(key)
            return
        # Not ours: it may hold (or have held) the name a StormService wants for a role PDB.
        meta = _meta(obj)
        namespace, name = meta.get("namespace"), meta.get("name")
        for ss in self.stormservices.by_index(INDEX_NAMESPACE, str(namespace or "")):
            if name in desired_pdbs(ss):
                self._queue.add(object_key(ss))

    def _pdb_updated(self, old: Obj, new: Obj) -> None:
        if _meta(old).get("resourceVersion") == _meta(new).get("resourceVersion"):
            return  # a resync: nothing changed
        old_key = self._owner_key(old)
        if old_key is not None and old_key != self._owner_key(new):
            self._queue.add(old_key)  # re-owned: the old owner recounts
        self._pdb_changed(new)

    def _pdb_deleted(self, obj: Obj | DeletedFinalStateUnknown) -> None:
        pdb = _unwrap(obj)
        self.syncer.fence.forget(str(_meta(pdb).get("uid") or ""))
        self._pdb_changed(pdb)

    def _service_changed(self, obj: Obj) -> None:
        # Our headless Service shares the StormService's name, and so does a conflicting one.
        key = object_key(obj)
        if self.stormservices.get(key) is not None:
            self._queue.add(key)
        owner = self._owner_key(obj)
        if owner is not None:
            self._queue.add(owner)
            return
        # Not ours: it may hold (or have held) the name a StormService wants for a role Service.
        meta = _meta(obj)
        for ss in self.stormservices.by_index(INDEX_NAMESPACE, str(meta.get("namespace") or "")):
            if meta.get("name") in role_service_names(ss):
                self._queue.add(object_key(ss))

    def _service_updated(self, old: Obj, new: Obj) -> None:
        if _meta(old).get("resourceVersion") == _meta(new).get("resourceVersion"):
            return  # a resync: nothing changed
        old_key = self._owner_key(old)
        if old_key is not None and old_key != self._owner_key(new):
            self._queue.add(old_key)  # re-owned: the old owner recounts
        self._service_changed(new)


def new_stormservice_controller(manager: Manager) -> Reconciler:
    own = manager.for_controller(CONTROLLER_NAME)
    return StormServiceController(
        client=own.client,
        informers=manager.informers,
        recorder=own.recorder,
        status_batch=StatusBatcher(STATUS_BATCH_SECONDS),
    )
