"""kubectl-style output: aligned tables, ages, `-o json|yaml`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml

OUTPUT_FORMATS = ("json", "yaml")

# PyYAML resolves scalars by YAML 1.1 and so leaves strings such as "1e3", "-123e45" or "0o17"
# unquoted, but kubectl (YAML 1.2 core schema) reads them back as numbers: a label value copied
# from our output into a manifest would change type. Quote every string either version would
# read as something else.
_NOT_A_STRING_IN_YAML_1_2 = re.compile(
    r"""[-+]?[0-9]+
    | 0o[0-7]+ | 0x[0-9a-fA-F]+
    | [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)
    | null|Null|NULL|~ | true|True|TRUE|false|False|FALSE""",
    re.VERBOSE,
)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if _NOT_A_STRING_IN_YAML_1_2.fullmatch(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns left-aligned, three spaces apart, as `kubectl get` prints them."""
    cells = [[str(h).upper() for h in header], *[["" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, the AGE column of kubectl."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        d = h // 24
        return f"{d}d" if h % 24 == 0 else f"{d}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y = h // (24 * 365)
        return f"{y}y{(h // 24) % 365}d"
    return f"{h // (24 * 365)}y"


def age(timestamp: str | None, now: datetime) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return human_duration((now - then).total_seconds())


def render(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=4, ensure_ascii=False)
    if fmt == "yaml":
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True).rstrip("\n")
    raise ValueError(f"unknown output format {fmt!r}")


def to_yaml(data: Any) -> str:
    """Stable YAML for reading and diffing: keys sorted, so equal templates read the same."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True, default_flow_style=False)
