"""Top entries of a py-spy profile in collapsed ("raw") format, by self and by total samples.

    python -m bench.profile DIR/ours.txt [--top 25] [--grep controller/]

A line of the file is `frame;frame;...;leaf count`, a frame `function (file:line)`. Self counts a
function when it is the leaf; total counts it once per stack it appears in (recursion counted
once). Lines are dropped from the frame names so that one function is one entry.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """`f (path/to/file.py:12)` -> `f (path/to/file.py)`, and site-packages paths shortened."""
    name = _LINE.sub(")", frame.strip())
    return re.sub(r"\(.*?site-packages/", "(", re.sub(r"\(/.*?/(controller|apis)/", r"(\1/", name))


def tally(lines: list[str]) -> tuple[Counter[str], Counter[str], int]:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        samples += count
        if frames:
            self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
    return self_counts, total_counts, samples


def table(title: str, counts: Counter[str], samples: int, top: int, grep: str | None) -> list[str]:
    rows = [f"{title}", "", "| % | samples | function (file) |", "| ---: | ---: | --- |"]
    shown = 0
    for name, count in counts.most_common():
        if grep and grep not in name:
            continue
        rows.append(f"| {100 * count / max(samples, 1):5.1f} | {count} | `{name}` |")
        shown += 1
        if shown >= top:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--grep", help="only frames whose name contains this")
    args = parser.parse_args(argv)
    self_counts, total_counts, samples = tally(args.path.read_text().splitlines())
    print(f"{samples} samples\n")
    print("\n".join(table("Self", self_counts, samples, args.top, args.grep)))
    print()
    print("\n".join(table("Total", total_counts, samples, args.top, args.grep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
