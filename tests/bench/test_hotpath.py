"""`python -m bench.hotpath` still drives pyserver's protocol objects: every case runs (each
checks its own answers: a 200 for every trigger, one relayed frame per client event)."""

from __future__ import annotations

import pytest

from bench import hotpath


@pytest.mark.parametrize("case", sorted(hotpath.CASES))
def test_every_case_runs_and_checks_its_answers(case: str) -> None:
    hotpath.CASES[case](32)()


def test_the_command_line_prints_microseconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert hotpath.main(["http", "-n", "16", "--repeats", "1"]) == 0
    assert "µs per operation" in capsys.readouterr().out
