"""`kubectl storm`: status, history and rollout commands for StormServices.

Installed as the console script `kubectl-storm`, which kubectl's plugin discovery finds on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from controller.kubectl_storm import history, mutate, status
from controller.kubectl_storm.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_STALLED,
    CliError,
    api_error_message,
    one_line,
)
from controller.kubectl_storm.lookup import Target
from controller.kubectl_storm.output import OUTPUT_FORMATS
from controller.runtime.client import ApiClient, create_client
from controller.runtime.errors import ApiError
from controller.runtime.kubeconfig import ConfigError
from controller.runtime.options import parse_duration

EPILOG = f"""\
examples:
  kubectl storm status llama-pd                 roles, revisions, conditions, why a rollout waits
  kubectl storm status llama-pd --watch         follow the rollout until it completes or stalls
  kubectl storm history llama-pd                revisions and what changed in each
  kubectl storm undo llama-pd --to-revision 2   write revision 2's template back
  kubectl storm pause|resume|restart llama-pd
  kubectl storm scale llama-pd --role decode --replicas 4

restart sets kubectl.kubernetes.io/restartedAt on every role's pod template: a new revision,
rolled out by the update strategy; every pod is recreated (also under InPlaceUpdate and
InPlaceIfPossible, which update only images in place).

exit codes:
  {EXIT_OK}  done (status --watch: the rollout completed)
  {EXIT_ERROR}  error, one line on stderr: no such object or revision, cannot reach the cluster,
     forbidden, bad arguments, status --watch --timeout expired
  {EXIT_STALLED}  status --watch: the rollout stalled (Progressing=False), it needs you
  {EXIT_PAUSED}  status --watch: the rollout is paused (spec.paused)
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 1, like kubectl (2 means a stalled rollout here)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _duration(text: str) -> float:
    """A kubectl duration (a Go duration: `30s`, `5m`, `1m30s`, `500ms`), or plain seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30s, 5m, 1h)")
    return seconds


def _replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid replicas {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # Connection flags are accepted before and after the command (`kubectl storm -n ns status x`
    # and `kubectl storm status x -n ns`); SUPPRESS keeps the sub-parser from overwriting a value
    # given before the command with its default.
    common = _Parser(add_help=False)
    common.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help="namespace (default: the context's, else default)",
    )
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use")
    common.add_argument(
        "--kubeconfig",
        default=argparse.SUPPRESS,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
    )
    parser = _Parser(
        prog="kubectl storm",
        description="Inspect and roll out StormServices (orchestration.aibrix.ai/v1alpha1).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_, parents=[common])
        sub.add_argument("name", metavar="NAME", help="the StormService")
        return sub

    output_help = f"output format: {'|'.join(OUTPUT_FORMATS)}"
    p = command("status", "per-role counts, revisions, conditions and why a rollout waits")
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, help=output_help)
    p.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help=f"follow the rollout: exit {EXIT_OK} when complete, {EXIT_STALLED} when stalled, "
        f"{EXIT_PAUSED} when paused",
    )
    p.add_argument("--timeout", type=_duration, help="with --watch: give up after this long (exit 1)")
    p = command("history", "revisions, and what changed in each (a diff of the role templates)")
    p.add_argument("--revision", type=int, help="show this revision's template and what it changed")
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, help=output_help)
    p = command("undo", "write a revision's template back (default: the previous revision)")
    p.add_argument(
        "--to-revision",
        type=int,
        default=None,
        help="the revision to go back to (0 or absent: the one before the present)",
    )
    command("pause", "stop rollouts (spec.paused=true)")
    command("resume", "let rollouts go on (spec.paused=false)")
    command("restart", "recreate every pod, by a new revision (kubectl.kubernetes.io/restartedAt)")
    p = command("scale", "set one role's replicas (instances per RoleSet)")
    p.add_argument("--role", required=True, help="the role's name")
    p.add_argument("--replicas", required=True, type=_replicas, help="instances of the role per RoleSet")
    return parser


# --- kubeconfig ----------------------------------------------------------------------------------


def kubeconfig_paths(flag: str | None) -> list[str]:
    if flag:
        return [flag]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [os.path.expanduser("~/.kube/config")]


def default_namespace(paths: Sequence[str], context: str | None) -> str:
    """The namespace of the context in use, merged as kubectl merges $KUBECONFIG (the first file
    that sets a value wins); `default` when it sets none."""
    current: str | None = None
    contexts: dict[str, Any] = {}
    for path in paths:
        file = Path(path).expanduser()
        if not file.is_file():
            continue
        try:
            config = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise CliError(f"error: cannot read kubeconfig {path}: {one_line(str(err))}") from err
        current = current or config.get("current-context")
        for entry in config.get("contexts") or ():
            if isinstance(entry, dict) and str(entry.get("name")) not in contexts:
                contexts[str(entry.get("name"))] = entry.get("context") or {}
    name = context or current
    if name is None:
        return "default"
    if name not in contexts:
        raise CliError(f'error: context "{name}" does not exist')
    return str(contexts[name].get("namespace") or "default")


def check_kubeconfig(paths: Sequence[str]) -> None:
    if not any(Path(p).expanduser().is_file() for p in paths):
        raise CliError(f"error: no kubeconfig at {os.pathsep.join(paths)} (set --kubeconfig or KUBECONFIG)")


async def connect(paths: Sequence[str], context: str | None) -> ApiClient:
    try:
        return await create_client(
            os.pathsep.join(paths), context=context, user_agent="kubectl-storm", request_timeout=30
        )
    except (ConfigError, OSError, ValueError, KeyError, TypeError) as err:
        raise CliError(f"error: invalid kubeconfig: {one_line(str(err))}") from err


# --- dispatch ------------------------------------------------------------------------------------


async def dispatch(args: argparse.Namespace, target: Target) -> int:
    match args.command:
        case "status":
            if args.watch:
                if args.output:
                    raise CliError("error: --watch and --output cannot be used together")
                return await status.watch(target, args.timeout or None)
            return await status.show(target, args.output)
        case "history":
            return await history.show(target, args.revision, args.output)
        case "undo":
            return await mutate.undo(target, args.to_revision)
        case "pause":
            return await mutate.set_paused(target, True)
        case "resume":
            return await mutate.set_paused(target, False)
        case "restart":
            return await mutate.restart(target)
        case "scale":
            return await mutate.scale(target, args.role, args.replicas)
    raise CliError(f"error: unknown command {args.command!r}")


async def run(args: argparse.Namespace, paths: Sequence[str], context: str | None, namespace: str) -> int:
    client = await connect(paths, context)
    try:
        return await dispatch(args, Target(client, namespace, args.name))
    except ApiError as err:
        raise CliError(api_error_message(err, str(client.configuration.host))) from err
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    context = getattr(args, "context", None)
    try:
        paths = kubeconfig_paths(getattr(args, "kubeconfig", None))
        check_kubeconfig(paths)
        namespace = getattr(args, "namespace", None) or default_namespace(paths, context)
        code = asyncio.run(run(args, paths, context, namespace))
    except CliError as err:
        print(err.message, file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and keep the interpreter's final
        # flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_ERROR
    sys.exit(code)


if __name__ == "__main__":
    main()
