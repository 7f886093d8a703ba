"""Command-line options of the controller manager."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.runtime.logging import LEVELS, LogFormat

SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_LEASE_NAME = "stormservice-controller"


@dataclass(frozen=True, slots=True)
class Options:
    kubeconfig: str | None = None
    namespace: str | None = None
    stormservice_workers: int = 5
    roleset_workers: int = 5
    leader_elect: bool = True
    leader_elect_namespace: str = "default"
    leader_elect_id: str = DEFAULT_LEASE_NAME
    metrics_bind_address: str = ":8080"
    health_probe_bind_address: str = ":8081"
    kube_api_qps: float = 50.0
    kube_api_burst: int = 100
    log_level: str = "info"
    log_format: LogFormat = "json"


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
        "--metrics-bind-address",
        type=_bind_address,
        default=defaults.metrics_bind_address,
        help="host:port of the Prometheus /metrics endpoint; 0 disables it (default: %(default)s)",
    )
    parser.add_argument(
        "--health-probe-bind-address",
        type=_bind_address,
        default=defaults.health_probe_bind_address,
        help="host:port of /healthz and /readyz; 0 disables them (default: %(default)s)",
    )
    parser.add_argument(
        "--kube-api-qps",
        type=_positive_float,
        default=defaults.kube_api_qps,
        help="sustained queries per second to the API server (default: %(default)s)",
    )
    parser.add_argument(
        "--kube-api-burst",
        type=_positive_int,
        default=defaults.kube_api_burst,
        help="burst of queries to the API server (default: %(default)s)",
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
    return parser


def parse_args(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
) -> Options:
    args = build_parser().parse_args(argv)
    return Options(
        kubeconfig=args.kubeconfig or None,
        namespace=args.namespace or None,
        stormservice_workers=args.stormservice_workers,
        roleset_workers=args.roleset_workers,
        leader_elect=args.leader_elect,
        leader_elect_namespace=args.leader_elect_namespace
        or default_leader_elect_namespace(env, service_account_file),
        leader_elect_id=args.leader_elect_id,
        metrics_bind_address=args.metrics_bind_address,
        health_probe_bind_address=args.health_probe_bind_address,
        kube_api_qps=args.kube_api_qps,
        kube_api_burst=args.kube_api_burst,
        log_level=args.log_level,
        log_format=args.log_format,
    )
