"""``python -m ionflux.bench [SECTION…]``: runs the benchmark sections and prints a table."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import tempfile
import time
from pathlib import Path

from ._timing import Row

SECTIONS = ["runtime", "ionwall", "graph", "store", "triggers"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ionflux.bench")
    parser.add_argument("sections", nargs="*", default=SECTIONS, help=f"any of {SECTIONS}")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[3]
    print(
        f"# ionflux bench — {time.strftime('%Y-%m-%d %H:%M')} — {platform.machine()}, "
        f"python {platform.python_version()}"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="ionflux-bench-") as tmp:
        for name in args.sections:
            try:
                module = importlib.import_module(f"ionflux.bench.{name}")
            except ModuleNotFoundError:
                print(f"\n## {name}: not available")
                continue
            print(f"\n## {name}")
            try:
                rows: list[Row] = module.run(repo=repo, workdir=Path(tmp) / name)
            except Exception as exc:  # one broken section must not hide the others
                failed = True
                print(f"  FAILED: {type(exc).__name__}: {exc}")
                continue
            width = max(len(r.label) for r in rows) if rows else 0
            for r in rows:
                print(f"  {r.label:<{width}}  {_fmt(r.value)} {r.unit}")
            sys.stdout.flush()
    return 1 if failed else 0


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:10.1f}"
    return f"{value:10.3f}"


if __name__ == "__main__":
    sys.exit(main())
