"""Arguments, kubeconfig namespace resolution, error wording, ages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.kubectl_storm.cli import _duration, build_parser, default_namespace
from controller.kubectl_storm.errors import CliError, api_error_message
from controller.kubectl_storm.output import human_duration, table
from controller.runtime.errors import Forbidden, NotFound, ServerError, Unauthorized

SERVER = "https://127.0.0.1:6443"


@pytest.mark.parametrize(
    ("err", "line"),
    [
        (
            NotFound(404, "NotFound", 'stormservices.orchestration.aibrix.ai "x" not found'),
            'Error from server (NotFound): stormservices.orchestration.aibrix.ai "x" not found',
        ),
        (
            Forbidden(
                403, "Forbidden", 'stormservices.orchestration.aibrix.ai "x" is forbidden:\nUser "u" cannot'
            ),
            'Error from server (Forbidden): stormservices.orchestration.aibrix.ai "x" is forbidden: User "u" cannot',
        ),
        (
            ServerError(0, "TransportError", "GET /apis/x: Cannot connect to host 127.0.0.1:6443"),
            f"error: cannot reach the cluster at {SERVER}: GET /apis/x: Cannot connect to host 127.0.0.1:6443",
        ),
        (
            Unauthorized(401, "Unauthorized", "Unauthorized"),
            "error: You must be logged in to the server (Unauthorized)",
        ),
    ],
)
def test_api_errors_are_one_kubectl_line(err: Exception, line: str) -> None:
    assert isinstance(err, NotFound | Forbidden | ServerError | Unauthorized)
    assert api_error_message(err, SERVER) == line


@pytest.mark.parametrize(
    ("argv", "namespace", "command"),
    [
        (["status", "x"], None, "status"),
        (["-n", "a", "status", "x"], "a", "status"),
        (["status", "x", "-n", "b"], "b", "status"),
        (["--namespace=c", "scale", "x", "--role", "r", "--replicas", "2"], "c", "scale"),
    ],
)
def test_connection_flags_before_or_after_the_command(
    argv: list[str], namespace: str | None, command: str
) -> None:
    args = build_parser().parse_args(argv)
    assert (getattr(args, "namespace", None), args.command, args.name) == (namespace, command, "x")


@pytest.mark.parametrize(
    "argv",
    [
        ["scale", "x", "--role", "r", "--replicas", "-1"],
        ["status"],
        ["status", "x", "-o", "wide"],
        ["frobnicate", "x"],
    ],
)
def test_usage_errors_exit_1_not_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30), ("30s", 30), ("5m", 300), ("1h2m3s", 3723), ("1.5s", 1.5)]
)
def test_duration(text: str, seconds: float) -> None:
    assert _duration(text) == seconds


def kubeconfig(path: Path, current: str | None, contexts: dict[str, str | None]) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "contexts": [
            {"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
            for name, ns in contexts.items()
        ],
    }
    path.write_text(json.dumps(config))
    return str(path)


def test_namespace_of_the_context(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", "one", {"one": "ns-one", "two": None})
    second = kubeconfig(tmp_path / "b", "three", {"one": "shadowed", "three": "ns-three"})
    assert default_namespace([first], None) == "ns-one"
    assert default_namespace([first], "two") == "default"
    # Merged like $KUBECONFIG: the first file's current-context and contexts win.
    assert default_namespace([first, second], None) == "ns-one"
    assert default_namespace([second, first], None) == "ns-three"
    assert default_namespace([first, second], "three") == "ns-three"
    assert default_namespace([str(tmp_path / "missing")], None) == "default"
    with pytest.raises(CliError, match=r'^error: context "nope" does not exist$'):
        default_namespace([first], "nope")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (7 * 3600 + 60, "7h1m"),
        (30 * 3600, "30h"),
        (50 * 3600, "2d2h"),
        (400 * 86400, "400d"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_table_aligns_columns() -> None:
    assert table(["a", "long header"], [["xxxxx", 1], ["y", None]]) == "A       LONG HEADER\nxxxxx   1\ny"
