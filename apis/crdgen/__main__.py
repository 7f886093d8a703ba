"""python -m apis.crdgen [--check] [--out DIR]"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from apis.crdgen.render import render_all

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "manifests" / "crds"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apis.crdgen", description="Generate the StormService and RoleSet CRDs."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if the files differ from the generated ones",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    rendered = render_all()
    if args.check:
        stale = 0
        for name, text in rendered.items():
            path = out / name
            current = path.read_text() if path.exists() else ""
            if current != text:
                stale += 1
                diff = difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    fromfile=f"{path} (committed)",
                    tofile=f"{path} (generated)",
                    n=2,
                )
                sys.stdout.writelines(diff)
        if stale:
            print(f"\n{stale} CRD file(s) out of date: run `python -m apis.crdgen`", file=sys.stderr)
            return 1
        print(f"CRDs up to date ({len(rendered)} files in {out})", file=sys.stderr)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (out / name).write_text(text)
        print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
