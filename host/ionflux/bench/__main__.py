"""``python -m ionflux.bench [--repeat N] [SECTION…]``: runs the benchmark sections and
prints a table. With ``--repeat N`` each section runs N times in a row (same process)
and each row shows the median and the range: on a shared machine one run says little."""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ._timing import Row

SECTIONS = [
    "runtime",
    "ionwall",
    "ionwall_cluster",
    "graph",
    "store",
    "triggers",
    "cluster",
    "reactor",
    "guests",
    "native",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ionflux.bench")
    parser.add_argument("sections", nargs="*", default=SECTIONS, help=f"any of {SECTIONS}")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each section N times"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
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
            runs: list[list[Row]] = []
            try:
                for i in range(args.repeat):
                    runs.append(module.run(repo=repo, workdir=Path(tmp) / f"{name}-{i}"))
            except Exception as exc:  # one broken section must not hide the others
                failed = True
                print(f"  FAILED: {type(exc).__name__}: {exc}")
                continue
            _print(runs)
            sys.stdout.flush()
    return 1 if failed else 0


def _print(runs: list[list[Row]]) -> None:
    """One line per row: the value, or with several runs the median and the range."""
    rows = runs[0]
    width = max(len(r.label) for r in rows) if rows else 0
    for i, r in enumerate(rows):
        values = [run[i].value for run in runs if i < len(run) and run[i].label == r.label]
        if len(values) == 1:
            print(f"  {r.label:<{width}}  {_fmt(r.value)} {r.unit}")
        else:
            low, high = _fmt(min(values)).strip(), _fmt(max(values)).strip()
            spread = f"(range {low} to {high}, {len(values)} runs)"
            print(f"  {r.label:<{width}}  {_fmt(statistics.median(values))} {r.unit}  {spread}")


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:10.1f}"
    return f"{value:10.3f}"


if __name__ == "__main__":
    sys.exit(main())
