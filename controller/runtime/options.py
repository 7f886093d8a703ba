"""Command-line options of the controller manager."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.runtime.leaderelection import JITTER_FACTOR
from controller.runtime.logging import LEVELS, LogFormat

SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_LEASE_NAME = "stormservice-controller"

# Of the graceful shutdown budget, what is kept for after the syncs in flight: releasing the
# Lease (one request), flushing events, stopping the HTTP servers.
LEASE_RELEASE_TIMEOUT = 2.0
EVENT_FLUSH_TIMEOUT = 3.0
SERVER_STOP_TIMEOUT = 1.0
SHUTDOWN_RESERVE = LEASE_RELEASE_TIMEOUT + EVENT_FLUSH_TIMEOUT + SERVER_STOP_TIMEOUT


@dataclass(frozen=True, slots=True)
class Options:
    kubeconfig: str | None = None
    namespace: str | None = None
    stormservice_workers: int = 5
    roleset_workers: int = 5
    leader_elect: bool = True
    leader_elect_namespace: str = "default"
    leader_elect_id: str = DEFAULT_LEASE_NAME
    leader_elect_lease_duration: float = 15.0
    leader_elect_renew_deadline: float = 10.0
    leader_elect_retry_period: float = 2.0
    metrics_bind_address: str = ":8080"
    health_probe_bind_address: str = ":8081"
    kube_api_qps: float = 50.0
    kube_api_burst: int = 100
    log_level: str = "info"
    log_format: LogFormat = "json"
    inplace_update_deadline_seconds: float = 600.0
    # The whole shutdown (drain, Lease release, event flush) fits in this; the Deployment's
    # terminationGracePeriodSeconds must leave a margin above it (a test checks the manifest).
    graceful_shutdown_timeout: float = 20.0
    cache_sync_timeout: float = 120.0


def parse_bind_address(address: str) -> tuple[str, int] | None:
    """ ":8080" → ("", 8080) (every interface); "127.0.0.1:0" → an ephemeral port;
    "[::1]:8080" → IPv6; "0" or "" → None (serving disabled, as in controller-runtime)."""
    address = address.strip()
    if address in ("", "0"):
        return None
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"bind address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bind address {address!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bind address {address!r}: port out of range")
    return host, port


def default_leader_elect_namespace(
    env: Mapping[str, str] | None = None, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE
) -> str:
    """The pod's namespace: $POD_NAMESPACE (downward API), else the service account's namespace
    file, else "default"."""
    env = os.environ if env is None else env
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        namespace = service_account_file.read_text().strip()
    except OSError:
        namespace = ""
    return namespace or "default"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "t", "1", "yes", "y", "on"):
        return True
    if value in ("false", "f", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a Go duration ("15s", "1m30s", "500ms"), as client-go's flags take them, or
    from a bare number of seconds ("15", "2.5")."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    if not value or _DURATION_PART.sub("", value) != "":
        raise ValueError(f"invalid duration {text!r}: expected seconds or a duration like 15s, 1m30s, 500ms")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value))


def _positive_duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, not {text!r}")
    return value


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


def _bind_address(text: str) -> str:
    try:
        parse_bind_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="stormservice-controller",
        description="Kubernetes controller for StormService and RoleSet (orchestration.aibrix.ai/v1alpha1).",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="path to a kubeconfig file; without it: the in-cluster service account, else $KUBECONFIG, "
        "else ~/.kube/config",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="watch and manage only this namespace (default: all namespaces)",
    )
    parser.add_argument(
        "--stormservice-workers",
        type=_positive_int,
        default=defaults.stormservice_workers,
        help="concurrent StormService syncs (default: %(default)s)",
    )
    parser.add_argument(
        "--roleset-workers",
        type=_positive_int,
        default=defaults.roleset_workers,
        help="concurrent RoleSet syncs (default: %(default)s)",
    )
    parser.add_argument(
        "--leader-elect",
        type=_bool,
        nargs="?",
        const=True,
        default=defaults.leader_elect,
        metavar="true|false",
        help="elect a leader on a coordination.k8s.io Lease before acting, so that replicas can stand by "
        "(default: true)",
    )
    parser.add_argument(
        "--leader-elect-namespace",
        default=None,
        help="namespace of the leader election Lease (default: the pod's namespace, from $POD_NAMESPACE or "
        "the service account, else 'default')",
    )
    parser.add_argument(
        "--leader-elect-id",
        type=_name,
        default=defaults.leader_elect_id,
        help="name of the leader election Lease (default: %(default)s)",
    )
    parser.add_argument(
        "--leader-elect-lease-duration",
        type=_positive_duration,
        default=defaults.leader_elect_lease_duration,
        metavar="DURATION",
        help="how long a standby waits, after it last saw the Lease renewed, before taking it over "
        "(seconds or a duration like 15s; default: 15s)",
    )
    parser.add_argument(
        "--leader-elect-renew-deadline",
        type=_positive_duration,
        default=defaults.leader_elect_renew_deadline,
        metavar="DURATION",
        help="how long the leader keeps trying to renew before it stops leading; less than the lease "
        "duration (default: 10s)",
    )
    parser.add_argument(
        "--leader-elect-retry-period",
        type=_positive_duration,
        default=defaults.leader_elect_retry_period,
        metavar="DURATION",
        help=f"interval between attempts to acquire or renew the Lease; the renew deadline must exceed "
        f"{JITTER_FACTOR} times it (default: 2s)",
    )
    parser.add_argument(
        "--metrics-bind-address",
        type=_bind_address,
        default=defaults.metrics_bind_address,
        help="host:port of the Prometheus /metrics endpoint; 0 disables it (default: %(default)s, "
        "every interface, so that an in-cluster Prometheus can scrape the pod IP; 127.0.0.1:8080 "
        "keeps it local)",
    )
    parser.add_argument(
        "--health-probe-bind-address",
        type=_bind_address,
        default=defaults.health_probe_bind_address,
        help="host:port of /healthz and /readyz; 0 disables them (default: %(default)s, every "
        "interface, since the kubelet probes the pod IP)",
    )
    parser.add_argument(
        "--kube-api-qps",
        type=_positive_float,
        default=defaults.kube_api_qps,
        help="sustained queries per second to the API server, for each controller (RoleSet, "
        "StormService) and for the informers, as kube-controller-manager counts it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--kube-api-burst",
        type=_positive_int,
        default=defaults.kube_api_burst,
        help="burst of queries to the API server, for each controller and for the informers "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--log-level", choices=LEVELS, default=defaults.log_level, help="log level (default: %(default)s)"
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=defaults.log_format,
        help="log format (default: %(default)s)",
    )
    parser.add_argument(
        "--inplace-update-deadline",
        type=_positive_duration,
        default=defaults.inplace_update_deadline_seconds,
        metavar="SECONDS",
        help="how long an in-place update of a pod may take before the RoleSet controller reports it "
        "as stuck (seconds or a duration like 10m; default: 600)",
    )
    parser.add_argument(
        "--graceful-shutdown-timeout",
        type=_positive_duration,
        default=defaults.graceful_shutdown_timeout,
        metavar="DURATION",
        help="on SIGTERM, the time the whole shutdown may take: syncs in flight finish, the Lease is "
        "released, events are flushed; keep it below the pod's terminationGracePeriodSeconds "
        "(default: 20s)",
    )
    parser.add_argument(
        "--cache-sync-timeout",
        type=_positive_duration,
        default=defaults.cache_sync_timeout,
        metavar="DURATION",
        help="after this long without synced caches, log which resources cannot be listed and why "
        "(the informers keep retrying; /readyz reports it meanwhile) (default: 2m)",
    )
    return parser


def _check_leader_election_timing(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The rules LeaderElector enforces (client-go's), reported as usage errors at startup."""
    lease, renew, retry = (
        args.leader_elect_lease_duration,
        args.leader_elect_renew_deadline,
        args.leader_elect_retry_period,
    )
    if not renew < lease:
        parser.error(
            f"--leader-elect-renew-deadline ({renew:g}s) must be less than "
            f"--leader-elect-lease-duration ({lease:g}s)"
        )
    if not JITTER_FACTOR * retry < renew:
        parser.error(
            f"--leader-elect-retry-period ({retry:g}s) must be less than --leader-elect-renew-deadline "
            f"({renew:g}s) divided by {JITTER_FACTOR} (the jitter of the retries)"
        )


def _check_shutdown_budget(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.graceful_shutdown_timeout > SHUTDOWN_RESERVE:
        parser.error(
            f"--graceful-shutdown-timeout ({args.graceful_shutdown_timeout:g}s) must exceed "
            f"{SHUTDOWN_RESERVE:g}s: that much is kept for releasing the Lease, flushing events and "
            "stopping the servers, the rest is for the syncs in flight"
        )


def parse_args(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
) -> Options:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_leader_election_timing(parser, args)
    _check_shutdown_budget(parser, args)
    return Options(
        kubeconfig=args.kubeconfig or None,
        namespace=args.namespace or None,
        stormservice_workers=args.stormservice_workers,
        roleset_workers=args.roleset_workers,
        leader_elect=args.leader_elect,
        leader_elect_namespace=args.leader_elect_namespace
        or default_leader_elect_namespace(env, service_account_file),
        leader_elect_id=args.leader_elect_id,
        leader_elect_lease_duration=args.leader_elect_lease_duration,
        leader_elect_renew_deadline=args.leader_elect_renew_deadline,
        leader_elect_retry_period=args.leader_elect_retry_period,
        metrics_bind_address=args.metrics_bind_address,
        health_probe_bind_address=args.health_probe_bind_address,
        kube_api_qps=args.kube_api_qps,
        kube_api_burst=args.kube_api_burst,
        log_level=args.log_level,
        log_format=args.log_format,
        inplace_update_deadline_seconds=args.inplace_update_deadline,
        graceful_shutdown_timeout=args.graceful_shutdown_timeout,
        cache_sync_timeout=args.cache_sync_timeout,
    )
