"""Entry point: `stormservice-controller` (console script) or `python -m controller`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from controller.runtime.client import ApiClient
from controller.runtime.kubeconfig import load_config
from controller.runtime.logging import configure_logging, get_logger
from controller.runtime.manager import LeadershipLost, Manager
from controller.runtime.options import Options, parse_args

log = get_logger("controller")

# A renewal every retry period (2 s) and, as a candidate, a read when the Lease changes.
LEASE_CLIENT_QPS = 5.0
LEASE_CLIENT_BURST = 10


def _missing(err: ModuleNotFoundError, module: str) -> bool:
    """Whether `err` says that `module` (or a package containing it) does not exist, as opposed
    to a broken import inside a module that does exist: that must not be hidden."""
    return err.name is not None and (module == err.name or module.startswith(err.name + "."))


def build_controllers(manager: Manager) -> None:
    """Register every controller that is available in this build."""
    registered = 0
    try:
        from controller.roleset.controller import (  # type: ignore[import-not-found, unused-ignore]
            new_roleset_controller,
        )
    except ModuleNotFoundError as err:
        if not _missing(err, "controller.roleset.controller"):
            raise
        log.warning("RoleSet controller not available in this build")
    else:
        manager.add(new_roleset_controller(manager), manager.options.roleset_workers)
        registered += 1
    try:
        from controller.stormservice.controller import (  # type: ignore[import-not-found, unused-ignore]
            new_stormservice_controller,
        )
    except ModuleNotFoundError as err:
        if not _missing(err, "controller.stormservice.controller"):
            raise
        log.warning("StormService controller not available in this build")
    else:
        manager.add(new_stormservice_controller(manager), manager.options.stormservice_workers)
        registered += 1
    if not registered:
        log.warning("no controllers registered")


async def run(options: Options) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("signal received, shutting down", signal=sig.name)
            stop.set()
        else:
            log.warning("second signal, exiting at once", signal=sig.name)
            os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    try:
        config = await load_config(options.kubeconfig)
    except Exception as err:
        log.error("cannot configure the API client", error=str(err), kubeconfig=options.kubeconfig)
        return 1
    client = ApiClient(config, qps=options.kube_api_qps, burst=int(options.kube_api_burst))
    # Leader election's own client and rate limiter: a Lease renewal never waits behind the
    # controllers' writes (a scale-up of thousands of pods would otherwise cost the Lease). Same
    # configuration: one exec plugin run, one token file reader, one TLS context.
    lease_client = (
        ApiClient(
            config,
            qps=LEASE_CLIENT_QPS,
            burst=LEASE_CLIENT_BURST,
            user_agent="stormservice-controller/leader-election",
        )
        if options.leader_elect
        else None
    )
    try:
        manager = Manager(client, options, lease_client=lease_client)
        build_controllers(manager)
        await manager.run(stop)
    except LeadershipLost as err:
        log.error("leader election lost, exiting so that the process restarts", error=str(err))
        return 1
    except Exception:
        log.exception("manager failed")
        return 1
    finally:
        if lease_client is not None:
            await lease_client.close()
        await client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    configure_logging(options.log_level, options.log_format)
    log.info(
        "starting",
        namespace=options.namespace or "(all)",
        leader_elect=options.leader_elect,
        lease=f"{options.leader_elect_namespace}/{options.leader_elect_id}",
        metrics=options.metrics_bind_address,
        health=options.health_probe_bind_address,
    )
    # uvloop rather than asyncio's own loop: measured under S1 of `make bench-scale`, ~10 % less
    # CPU per pod created and ~10 MiB less heap left held after the burst (its TLS transport).
    return uvloop.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
