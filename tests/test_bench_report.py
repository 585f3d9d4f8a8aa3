"""`python -m ionflux.bench --repeat N`: several runs of a section, reported as the
median and the range of each row (the sections themselves are benchmarks, not tests)."""

from __future__ import annotations

import pytest
from ionflux.bench.__main__ import _print, main
from ionflux.bench._timing import Row


def test_several_runs_show_the_median_and_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        [Row("gate overhead", 14.0, "%"), Row("p50", 2.0, "ms")],
        [Row("gate overhead", 18.0, "%"), Row("p50", 3.5, "ms")],
        [Row("gate overhead", 16.0, "%"), Row("p50", 2.5, "ms")],
    ]
    _print(runs)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "gate",
        "overhead",
        "16.000",
        "%",
        "(range",
        "14.000",
        "to",
        "18.000,",
        "3",
        "runs)",
    ]
    assert lines[1].split()[1:3] == ["2.500", "ms"] and "range 2.000 to 3.500" in lines[1]


def test_one_run_prints_the_value_alone(capsys: pytest.CaptureFixture[str]) -> None:
    _print([[Row("p50", 2.0, "ms")]])
    assert capsys.readouterr().out.split() == ["p50", "2.000", "ms"]


def test_repeat_must_be_positive() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--repeat", "0", "ionwall"])
    assert exc.value.code == 2
