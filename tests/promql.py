"""Just enough PromQL reading to check alert and dashboard expressions against a /metrics scrape:
which series names an expression selects, which labels its matchers name, and which labels it
groups by. Not a parser: string literals, range selectors and grouping clauses are cut out
first, and what remains is read by shape (a name followed by `(` is a function call)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

#: Labels Prometheus adds to every series when it scrapes (target labels); not on /metrics.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})

KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "bool", "offset", "atan2", "inf", "nan",
    }
)  # fmt: skip
# Aggregations may put `by (...)` between their name and their argument; after the grouping
# clause is cut out they are no longer followed by `(`, so they are named here.
AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
        "count_values", "group", "limitk", "limit_ratio",
    }
)  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r'([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}')
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_NAME = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![A-Za-z0-9_:])(?!\s*\()")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Expression:
    #: series name -> label names its matchers use (over every selector of that name)
    selectors: dict[str, set[str]] = field(default_factory=dict)
    #: labels of by/without/on/ignoring/group_* clauses
    grouping: set[str] = field(default_factory=set)
    #: series name -> (label, value) of its equality matchers (`label="value"`)
    equals: dict[str, set[tuple[str, str]]] = field(default_factory=dict)


def read(expr: str) -> Expression:
    out = Expression()

    def selector(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is None:
            raise ValueError(f"a selector without a metric name in {expr!r}")
        labels = out.selectors.setdefault(name, set())
        for label, op, value in _MATCHER.findall(m.group(2)):
            labels.add(label)
            if op == "=":
                out.equals.setdefault(name, set()).add((label, value))
        return f" {name} "

    text = _SELECTOR.sub(selector, expr)
    text = _STRING.sub('""', text)
    text = _RANGE.sub("[]", text)

    def grouping(m: re.Match[str]) -> str:
        out.grouping.update(_LABEL_NAME.findall(m.group(2)))
        return f" {m.group(1)} "

    text = _GROUPING.sub(grouping, text)
    for name in _NAME.findall(text):
        if name.lower() in KEYWORDS or name in AGGREGATIONS:
            continue
        out.selectors.setdefault(name, set())
    return out


Scraped = dict[str, dict[str, set[str]]]


def scraped_labels(text: str) -> Scraped:
    """Sample name (`x_total`, `x_bucket`, a gauge's name, ...) -> label name -> the values its
    samples carry, from a /metrics body. prometheus_client's parser names a counter family
    without `_total`, but keeps it on the samples, which is what expressions select."""
    out: Scraped = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return out


def problems(
    where: str, expr: str, scraped: Scraped, unseen: frozenset[tuple[str, str, str]] = frozenset()
) -> Iterable[str]:
    """What `expr` selects or uses that the scrape lacks: series, labels, and the values of
    `label="value"` matchers (but for Grafana variables, and the (series, label, value) in
    `unseen`: values the scrape could not show)."""
    parsed = read(expr)
    if not parsed.selectors:
        yield f"{where}: no metric found in {expr!r}"
    for name, labels in sorted(parsed.selectors.items()):
        if name not in scraped:
            yield f"{where}: {name} is not exported"
            continue
        for label in sorted(labels - TARGET_LABELS - scraped[name].keys()):
            yield f"{where}: {name} has no label {label!r}"
        for label, value in sorted(parsed.equals.get(name, ())):
            if label in TARGET_LABELS or "$" in value or (name, label, value) in unseen:
                continue
            if label in scraped[name] and value not in scraped[name][label]:
                yield f"{where}: {name} has no {label}={value!r} (only {sorted(scraped[name][label])})"
        for label in sorted(parsed.grouping - TARGET_LABELS):
            if label == "le" and not name.endswith("_bucket"):
                continue  # histogram_quantile's buckets are grouped by le; the rest are not
            if label not in scraped[name]:
                yield f"{where}: grouped by {label!r}, which {name} does not have"
