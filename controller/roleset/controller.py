"""Wiring of the RoleSet controller: informers, event handlers -> RoleSet keys, expectations.

Handlers only map an object to the key of the RoleSet that controls it (its controller
ownerReference) and record what the expectations wait for; the reconcile is in sync.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from apis.v1alpha1.constants import API_VERSION, KIND_ROLE_SET
from controller.roleset import adoption
from controller.roleset import labels as L
from controller.roleset.podcontrol import KubeObjectControl, ObjectControl
from controller.roleset.scheduling import SCHEDULERS, Scheduler
from controller.roleset.sync import Recorder, RoleSetSync, SyncConfig
from controller.runtime.client import KubeClient, Obj, object_key
from controller.runtime.controllerref import controller_ref
from controller.runtime.expectations import ControllerExpectations
from controller.runtime.informer import DeletedFinalStateUnknown, FuncHandler, Informer, InformerFactory
from controller.runtime.resources import POD_DISRUPTION_BUDGETS, PODS, PODSETS, ROLESETS, Resource
from controller.runtime.statusbatch import STATUS_BATCH_SECONDS
from controller.runtime.store import Store
from controller.runtime.workqueue import RateLimitingQueue

CONTROLLER_NAME = "roleset"


class _ControllerClients(Protocol):
    @property
    def client(self) -> KubeClient: ...

    @property
    def recorder(self) -> Recorder: ...


class _Manager(Protocol):
    """What the controller needs of controller.runtime's Manager."""

    @property
    def informers(self) -> InformerFactory: ...

    @property
    def options(self) -> Any: ...

    def for_controller(self, name: str) -> _ControllerClients: ...


def _unwrap(obj: Obj | DeletedFinalStateUnknown) -> Obj:
    return obj.obj if isinstance(obj, DeletedFinalStateUnknown) else obj


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class RoleSetController:
    """The Reconciler of RoleSets: `name`, `queue`, `sync(key)`."""

    def __init__(
        self,
        *,
        informers: InformerFactory,
        control: ObjectControl,
        recorder: Recorder,
        config: SyncConfig | None = None,
        queue: RateLimitingQueue | None = None,
        expectations: ControllerExpectations | None = None,
    ) -> None:
        self._name = CONTROLLER_NAME
        self._queue = queue or RateLimitingQueue(CONTROLLER_NAME)
        self.expectations = expectations or ControllerExpectations()
        self.rolesets: Informer = informers.informer(ROLESETS)
        # Only pods carrying our label: the cache stays small in clusters with many other pods.
        self.pods: Informer = informers.informer(PODS, label_selector=L.ROLESET_NAME_LABEL)
        # Orphans are found by the RoleSet name their label carries (adoption).
        self.pods.store.add_indexers({adoption.INDEX_ROLESET_LABEL: adoption.roleset_label_index})
        # Only the PDBs a RoleSet makes (they carry its name), not every PDB of the cluster.
        self.pdbs: Informer = informers.informer(POD_DISRUPTION_BUDGETS, label_selector=L.ROLESET_NAME_LABEL)
        self._informers = informers
        self.discovery = informers.discovery
        # One informer per scheduler whose PodGroups are served, started when they appear.
        self.pod_group_informers: dict[str, Informer] = {}
        # AIBrix's PodSets, cached only where AIBrix's CRD is installed (to take them over).
        self.podset_informer: Informer | None = None
        self.syncer = RoleSetSync(
            rolesets=self.rolesets.store,
            pods=self.pods.store,
            pdbs=self.pdbs.store,
            served=self.discovery.served,
            control=control,
            recorder=recorder,
            expectations=self.expectations,
            config=config,
            pod_groups=self._pod_group_store,
            podsets=self._podset_store,
        )
        self.rolesets.add_event_handler(
            FuncHandler(
                on_add=self._roleset_added, on_update=self._roleset_updated, on_delete=self._roleset_deleted
            )
        )
        self.pods.add_event_handler(
            FuncHandler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        )
        self.pdbs.add_event_handler(
            FuncHandler(
                on_add=self._owned_changed, on_update=self._owned_updated, on_delete=self._owned_deleted
            )
        )
        self.discovery.track((s.resource for s in SCHEDULERS.values()), self._pod_groups_served)
        self.discovery.track([PODSETS], self._podsets_served)

    # --- Reconciler -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def queue(self) -> RateLimitingQueue:
        return self._queue

    async def sync(self, key: str) -> float | None:
        return await self.syncer.sync(key)

    # --- RoleSets ---------------------------------------------------------------------------------

    def _roleset_added(self, obj: Obj) -> None:
        self._queue.add(object_key(obj))

    def _roleset_updated(self, old: Obj, new: Obj) -> None:
        if _rv(old) == _rv(new):
            return  # a resync: nothing changed
        self._queue.add(object_key(new))

    def _roleset_deleted(self, obj: Obj | DeletedFinalStateUnknown) -> None:
        key = obj.key if isinstance(obj, DeletedFinalStateUnknown) else object_key(obj)
        self.expectations.delete_expectations(key)
        self._queue.add(key)

    # --- pods -------------------------------------------------------------------------------------

    def _owner_key(self, obj: Mapping[str, Any]) -> str | None:
        """The key of the RoleSet controlling `obj`, if that RoleSet is the one in the cache (a
        RoleSet deleted and re-created under the same name does not inherit its pods)."""
        ref = controller_ref(obj)
        if ref is None or ref.get("kind") != KIND_ROLE_SET or ref.get("apiVersion") != API_VERSION:
            return None
        namespace = (obj.get("metadata") or {}).get("namespace")
        key = f"{namespace}/{ref.get('name')}"
        rs = self.rolesets.store.get(key)
        if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _orphan_key(self, pod: Mapping[str, Any]) -> str | None:
        """The key of the RoleSet an orphan pod's `roleset-name` label points at, if that RoleSet
        is cached (it may adopt the pod). None for pods with a controller."""
        if controller_ref(pod) is not None:
            return None
        keys = adoption.roleset_label_index(dict(pod))
        if not keys or self.rolesets.store.get(keys[0]) is None:
            return None
        return keys[0]

    def _pod_added(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            # Seen for the first time already terminating (e.g. after a restart): a deletion.
            self._pod_deleted(pod)
            return
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self._queue.add(key)
            return
        orphan_of = self._orphan_key(pod)
        if orphan_of is not None:
            self._queue.add(orphan_of)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _rv(old) == _rv(new):
            return
        if old["metadata"].get("uid") != new["metadata"].get("uid"):
            # Deleted and re-created under the same name while the informer was relisting: both
            # happened, and expectations must see both, or the RoleSet waits for them to expire.
            self._pod_deleted(old)
            self._pod_added(new)
            return
        if controller_ref(new) is None and (
            controller_ref(old) is not None or L.labels_of(old) != L.labels_of(new)
        ):
            # Became an orphan, or an orphan's labels changed: a RoleSet may adopt it now.
            orphan_of = self._orphan_key(new)
            if orphan_of is not None:
                self._queue.add(orphan_of)
        key = self._owner_key(new)
        started_deleting = new["metadata"].get("deletionTimestamp") and not old["metadata"].get(
            "deletionTimestamp"
        )
        if started_deleting and key is not None:
            self.expectations.deletion_observed(key, object_key(new))
        old_key = self._owner_key(old)
        if old_key is not None and old_key != key:
            self._queue.add(old_key)
        if key is not None:
            self._queue.add(key)

    def _pod_deleted(self, obj: Obj | DeletedFinalStateUnknown) -> None:
        pod = _unwrap(obj)
        key = self._owner_key(pod)
        if key is not None:
            if adoption.departed(pod):
                self.syncer.pod_departed(key, pod)
            self.expectations.deletion_observed(key, object_key(pod))
            self._queue.add(key)

    # --- PDBs and CRDs ------------------------------------------------------------------------------

    def _owned_changed(self, obj: Obj) -> None:
        key = self._owner_key(obj)
        if key is not None:
            self._queue.add(key)

    def _owned_updated(self, old: Obj, new: Obj) -> None:
        if _rv(old) != _rv(new):
            self._owned_changed(new)

    def _owned_deleted(self, obj: Obj | DeletedFinalStateUnknown) -> None:
        self._owned_changed(_unwrap(obj))

    def _pod_groups_served(self, resource: Resource, served: bool) -> None:
        if served:
            self._watch_pod_groups(resource)
        else:
            self._unwatch_pod_groups(resource)
        # Rare: a scheduler was installed or removed; every RoleSet may care.
        for key in self.rolesets.store.keys():  # noqa: SIM118 (Store is not a dict)
            self._queue.add(key)

    # --- PodGroups ----------------------------------------------------------------------------------

    def _watch_pod_groups(self, resource: Resource) -> None:
        """Start caching a scheduler's PodGroups once the API server serves them (an informer
        on a resource it does not serve would only fail and back off). Only PodGroups carrying
        our roleset-name label, which every PodGroup we create has."""
        for sched in SCHEDULERS.values():
            if sched.resource != resource or sched.strategy_key in self.pod_group_informers:
                continue
            informer = self._informers.informer(sched.resource, label_selector=L.ROLESET_NAME_LABEL)
            informer.add_event_handler(
                FuncHandler(
                    on_add=self._owned_changed, on_update=self._owned_updated, on_delete=self._owned_deleted
                )
            )
            self.pod_group_informers[sched.strategy_key] = informer

    def _unwatch_pod_groups(self, resource: Resource) -> None:
        """The scheduler's PodGroups are no longer served (its CRD is gone): stop its informer,
        which would only fail and back off (a reinstalled CRD starts a new one)."""
        for sched in SCHEDULERS.values():
            if sched.resource == resource:
                informer = self.pod_group_informers.pop(sched.strategy_key, None)
                if informer is not None:
                    self._informers.remove(informer)

    def _podsets_served(self, resource: Resource, served: bool) -> None:
        if served and self.podset_informer is None:
            # AIBrix labels every PodSet with its RoleSet's name.
            self.podset_informer = self._informers.informer(PODSETS, label_selector=L.ROLESET_NAME_LABEL)
            self.podset_informer.add_event_handler(
                FuncHandler(
                    on_add=self._owned_changed, on_update=self._owned_updated, on_delete=self._owned_deleted
                )
            )
        elif not served and self.podset_informer is not None:
            self._informers.remove(self.podset_informer)
            self.podset_informer = None

    def _podset_store(self) -> Store | None:
        informer = self.podset_informer
        if informer is None or not informer.has_synced() or not self.discovery.served(PODSETS):
            return None
        return informer.store

    def _pod_group_store(self, sched: Scheduler) -> Store | None:
        """The PodGroup cache of `sched` once it has listed, while its kind is served."""
        informer = self.pod_group_informers.get(sched.strategy_key)
        if informer is None or not informer.has_synced() or not self.discovery.served(sched.resource):
            return None
        return informer.store


def _deadline(options: Any) -> float:
    value = getattr(options, "inplace_update_deadline_seconds", None)
    return float(value) if value is not None else SyncConfig().inplace_deadline_seconds


def new_roleset_controller(manager: _Manager) -> RoleSetController:
    """The RoleSet Reconciler on the manager's shared informers, with its own client (and rate
    limit) and event recorder."""
    own = manager.for_controller(CONTROLLER_NAME)
    return RoleSetController(
        informers=manager.informers,
        control=KubeObjectControl(own.client),
        recorder=own.recorder,
        config=SyncConfig(
            inplace_deadline_seconds=_deadline(manager.options), status_batch_seconds=STATUS_BATCH_SECONDS
        ),
    )
