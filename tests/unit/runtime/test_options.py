from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.runtime.options import (
    Options,
    default_leader_elect_namespace,
    parse_args,
    parse_bind_address,
    parse_duration,
)

NO_SA = Path("/nonexistent/serviceaccount/namespace")
FLAGS = [
    "--kubeconfig",
    "--namespace",
    "--stormservice-workers",
    "--roleset-workers",
    "--leader-elect",
    "--leader-elect-namespace",
    "--leader-elect-id",
    "--leader-elect-lease-duration",
    "--leader-elect-renew-deadline",
    "--leader-elect-retry-period",
    "--metrics-bind-address",
    "--health-probe-bind-address",
    "--kube-api-qps",
    "--kube-api-burst",
    "--log-level",
    "--log-format",
    "--inplace-update-deadline",
]


def parse(*argv: str, env: dict[str, str] | None = None, sa: Path = NO_SA) -> Options:
    return parse_args(list(argv), env=env or {}, service_account_file=sa)


def test_defaults() -> None:
    assert parse() == Options(
        kubeconfig=None,
        namespace=None,
        stormservice_workers=5,
        roleset_workers=5,
        leader_elect=True,
        leader_elect_namespace="default",
        leader_elect_id="stormservice-controller",
        leader_elect_lease_duration=15.0,
        leader_elect_renew_deadline=10.0,
        leader_elect_retry_period=2.0,
        metrics_bind_address=":8080",
        health_probe_bind_address=":8081",
        kube_api_qps=50.0,
        kube_api_burst=100,
        log_level="info",
        log_format="json",
        inplace_update_deadline_seconds=600.0,
    )


def test_every_flag() -> None:
    opts = parse(
        "--kubeconfig=/tmp/kc",
        "--namespace=team-a",
        "--stormservice-workers=2",
        "--roleset-workers=8",
        "--leader-elect=false",
        "--leader-elect-namespace=ops",
        "--leader-elect-id=my-lease",
        "--leader-elect-lease-duration=1m",
        "--leader-elect-renew-deadline=45s",
        "--leader-elect-retry-period=500ms",
        "--metrics-bind-address=127.0.0.1:0",
        "--health-probe-bind-address=0",
        "--kube-api-qps=20.5",
        "--kube-api-burst=40",
        "--log-level=debug",
        "--log-format=console",
        "--inplace-update-deadline=90",
    )
    assert opts == Options(
        kubeconfig="/tmp/kc",
        namespace="team-a",
        stormservice_workers=2,
        roleset_workers=8,
        leader_elect=False,
        leader_elect_namespace="ops",
        leader_elect_id="my-lease",
        leader_elect_lease_duration=60.0,
        leader_elect_renew_deadline=45.0,
        leader_elect_retry_period=0.5,
        metrics_bind_address="127.0.0.1:0",
        health_probe_bind_address="0",
        kube_api_qps=20.5,
        kube_api_burst=40,
        log_level="debug",
        log_format="console",
        inplace_update_deadline_seconds=90.0,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15", 15.0),
        ("2.5", 2.5),
        ("15s", 15.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        (" 10s ", 10.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "15x", "1m 30s", "fifteen", "10s5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_inplace_update_deadline_accepts_durations() -> None:
    assert parse("--inplace-update-deadline=10m").inplace_update_deadline_seconds == 600.0
    assert parse("--inplace-update-deadline", "45").inplace_update_deadline_seconds == 45.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--leader-elect-renew-deadline=15s"], "must be less than --leader-elect-lease-duration"),
        (["--leader-elect-lease-duration=5s"], "must be less than --leader-elect-lease-duration"),
        (["--leader-elect-retry-period=10s"], "must be less than --leader-elect-renew-deadline"),
        (["--leader-elect-retry-period=9s"], "must be less than --leader-elect-renew-deadline"),
        (
            [
                "--leader-elect-lease-duration=4",
                "--leader-elect-renew-deadline=3",
                "--leader-elect-retry-period=2.5",
            ],
            "must be less than --leader-elect-renew-deadline",
        ),
    ],
)
def test_leader_election_timing_is_validated(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_leader_election_timing_at_the_limits() -> None:
    opts = parse(
        "--leader-elect-lease-duration=3",
        "--leader-elect-renew-deadline=2.9",
        "--leader-elect-retry-period=2",
    )
    assert (opts.leader_elect_lease_duration, opts.leader_elect_renew_deadline) == (3.0, 2.9)
    assert opts.leader_elect_retry_period == 2.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], True),
        (["--leader-elect"], True),
        (["--leader-elect=true"], True),
        (["--leader-elect", "false"], False),
        (["--leader-elect=False"], False),
        (["--leader-elect=0"], False),
    ],
)
def test_leader_elect_forms(argv: list[str], expected: bool) -> None:
    assert parse(*argv).leader_elect is expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--leader-elect=maybe"],
        ["--roleset-workers=0"],
        ["--stormservice-workers=x"],
        ["--kube-api-qps=0"],
        ["--kube-api-burst=-1"],
        ["--metrics-bind-address=localhost"],
        ["--health-probe-bind-address=:99999"],
        ["--log-level=verbose"],
        ["--log-format=xml"],
        ["--leader-elect-id="],
        ["--leader-elect-lease-duration=0"],
        ["--leader-elect-renew-deadline=-1s"],
        ["--leader-elect-retry-period=soon"],
        ["--inplace-update-deadline=0"],
        ["--inplace-update-deadline=ten"],
    ],
)
def test_invalid_flags_exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_leader_elect_namespace_default(tmp_path: Path) -> None:
    sa = tmp_path / "namespace"
    assert default_leader_elect_namespace({}, sa) == "default"
    sa.write_text("stormservice-system\n")
    assert default_leader_elect_namespace({}, sa) == "stormservice-system"
    assert default_leader_elect_namespace({"POD_NAMESPACE": "from-env"}, sa) == "from-env"
    assert parse(sa=sa).leader_elect_namespace == "stormservice-system"
    assert parse("--leader-elect-namespace=x", sa=sa).leader_elect_namespace == "x"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":8080", ("", 8080)),
        ("0.0.0.0:8081", ("0.0.0.0", 8081)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9090", ("::1", 9090)),
        ("0", None),
        ("", None),
    ],
)
def test_parse_bind_address(address: str, expected: tuple[str, int] | None) -> None:
    assert parse_bind_address(address) == expected


@pytest.mark.parametrize("address", ["8080", "host:port", ":70000"])
def test_parse_bind_address_rejects(address: str) -> None:
    with pytest.raises(ValueError):
        parse_bind_address(address)


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "stormservice-controller"), "--help"],
        [sys.executable, "-m", "controller", "--help"],
    ],
    ids=["console-script", "python-m"],
)
def test_help_lists_every_flag(command: list[str]) -> None:
    if not Path(command[0]).exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("usage: stormservice-controller")
    for flag in FLAGS:
        assert flag in out, flag


def test_help_says_the_default_bind_addresses_listen_on_every_interface() -> None:
    from controller.runtime.options import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "(default: :8080, every interface" in text
    assert "(default: :8081, every interface" in text
