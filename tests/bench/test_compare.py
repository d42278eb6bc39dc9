"""`python -m bench compare`: two and three real pyserver instances, one short case, a table
and JSONL; the label errors; plus the pure parts (run order, case selection, medians and the
table)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench import compare
from tests.bench.pyserverproc import REPO

PYSERVER = f"{shlex.quote(sys.executable)} -m pyserver --host 127.0.0.1 --port {{port}}"


def run_compare(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "compare", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


def test_two_pyservers_one_round(tmp_path: Path) -> None:
    done = run_compare(
        "--a", PYSERVER + " --log-level warning", "--a-label", "plain",
        "--b", PYSERVER + " --log-level warning --config bench/servers/pyserver-parity.toml",
        "--b-label", "parity",
        "--profile", "smoke", "--rounds", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| case | metric | plain | parity | parity/plain |" in done.stdout
    assert "| fanout-n20-r20 | delivered msg/s ↑ |" in done.stdout
    assert "| fanout-n20-r20 | p99 latency ms ↓ |" in done.stdout
    [jsonl] = tmp_path.glob("*-plain-vs-parity.jsonl")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["side"], r["label"], r["round"]) for r in records] == [
        ("A", "plain", 0),
        ("B", "parity", 0),
    ]
    for rec in records:
        assert rec["status"] == "ok", rec.get("error")
        assert rec["case"] == "fanout-n20-r20"
        assert rec["metrics"]["delivery ratio"] == 1.0
        assert rec["metrics"]["delivered msg/s"] > 0
        assert rec["result"]["summary"]["subscribers"] == 20
        assert rec["result"]["server"]["pid"] == rec["server_pid"]
        assert "{port}" not in rec["server_command"]
        assert f"--port {rec['port']}" in rec["server_command"]
        assert rec["server_exit"] == 0  # stopped with SIGTERM, exited cleanly
        assert not alive(rec["server_pid"])
        if len(compare.usable_cpus()) >= 2:
            assert rec["pinning"]["server"] != rec["pinning"]["load"]
    assert records[0]["server_pid"] != records[1]["server_pid"]
    assert "--config bench/servers/pyserver-parity.toml" in records[1]["server_command"]
    [table] = tmp_path.glob("*-plain-vs-parity.md")
    assert table.read_text().startswith("| case | metric | plain | parity |")
    again = run_compare("--table", str(jsonl))
    assert again.returncode == 0 and again.stdout.strip() == table.read_text().strip()


def test_three_pyservers_one_round(tmp_path: Path) -> None:
    quiet = PYSERVER + " --log-level warning"
    done = run_compare(
        "--a", quiet, "--a-label", "one",
        "--b", quiet + " --config bench/servers/pyserver-parity.toml", "--b-label", "two",
        "--c", PYSERVER + " --log-level error", "--c-label", "three",
        "--profile", "smoke", "--rounds", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x 3 servers = 3 runs" in done.stderr
    head = "| case | metric | one | two | three | two/one | three/one | three/two |"
    assert head in done.stdout
    assert "|---|---|---|---|---|---|---|---|" in done.stdout
    [jsonl] = tmp_path.glob("*-one-vs-two-vs-three.jsonl")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["side"], r["label"], r["round"]) for r in records] == [
        ("A", "one", 0),
        ("B", "two", 0),
        ("C", "three", 0),
    ]
    for rec in records:
        assert rec["status"] == "ok", rec.get("error")
        assert rec["metrics"]["delivery ratio"] == 1.0
        assert rec["server_exit"] == 0
        assert not alive(rec["server_pid"])
    assert len({r["server_pid"] for r in records}) == 3  # a fresh server per run
    assert records[2]["server_command"].endswith("--log-level error")
    rates = [r["metrics"]["delivered msg/s"] for r in records]
    [row] = [line for line in done.stdout.splitlines() if "delivered msg/s ↑" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == ["fanout-n20-r20", "delivered msg/s ↑"]
    expected = [*rates, rates[1] / rates[0], rates[2] / rates[0], rates[2] / rates[1]]
    assert cells[2:] == [compare._fmt(v) for v in expected]
    [table] = tmp_path.glob("*-one-vs-two-vs-three.md")
    again = run_compare("--table", str(jsonl))
    assert again.returncode == 0 and again.stdout.strip() == table.read_text().strip()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (("--a-label", "x", "--b-label", "x"), "--a-label and --b-label are both 'x'"),
        (("--b-label", "A"), "--a-label and --b-label are both 'A'"),
        (("--c", "z {port}", "--c-label", "A"), "--a-label and --c-label are both 'A'"),
        (("--c", "z {port}", "--b-label", "C"), "--b-label and --c-label are both 'C'"),
        (("--c-label", "three"), "--c-label needs --c"),
    ],
)
def test_labels_must_differ_and_c_label_needs_c(
    tmp_path: Path, labels: tuple[str, ...], message: str
) -> None:
    done = run_compare(
        "--a", "x {port}", "--b", "y {port}", *labels, "--profile", "smoke", "--out", str(tmp_path)
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()  # one line, no usage text
    assert line.startswith("python -m bench compare: error: ") and message in line
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_a_server_that_never_listens_is_reported_not_waited_for(tmp_path: Path) -> None:
    done = run_compare(
        "--a", "sleep 60 # {port}", "--b", "exit 3 # {port}", "--profile", "smoke",
        "--rounds", "1", "--start-timeout", "2", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1
    records = [json.loads(x) for x in next(tmp_path.glob("*.jsonl")).read_text().splitlines()]
    assert "did not listen" in records[0]["error"]
    assert "the server exited" in records[1]["error"]
    assert records[1]["server_exit"] == 3
    assert not alive(records[0]["server_pid"])
    assert "not counted" in done.stdout


def test_bad_options_exit_2() -> None:
    assert run_compare("--a", "x", "--b", "y {port}").returncode == 2  # no {port} in A
    assert run_compare("--a", "x {port}").returncode == 2  # no B
    assert run_compare("--a", "x {port}", "--b", "y {port}", "--host", "10.1.2.3").returncode == 2
    assert run_compare("--scenarios", "nope", "--list").returncode == 2


def test_run_order_alternates_which_server_goes_first() -> None:
    assert compare.run_order(1) == [(0, "A"), (0, "B")]
    assert compare.run_order(3) == [
        (0, "A"), (0, "B"), (1, "B"), (1, "A"), (2, "A"), (2, "B"),
    ]  # fmt: skip
    assert compare.run_order(2, ("A", "B", "C")) == [
        (0, "A"), (0, "B"), (0, "C"), (1, "C"), (1, "B"), (1, "A"),
    ]  # fmt: skip


def test_case_selection() -> None:
    fanout = compare.select_cases("quick", "fanout", "")
    assert fanout and all(c.scenario == "fanout" for c in fanout)
    assert [c.name for c in compare.select_cases("full", "conns", "19500")] == ["idle-n19500"]
    with pytest.raises(ValueError):
        compare.select_cases("quick", "nope", "")
    for cases in compare.PROFILES.values():
        assert len({c.name for c in cases}) == len(cases)
    for profile in ("quick", "full"):  # client events at max rate: a closed loop, not a cap
        (case,) = compare.select_cases(profile, "client", "max")
        assert case.name == "client-p500-max"
        assert "--rate 0 --window 4" in " ".join(case.args)


def test_table_medians_ratios_and_failed_runs() -> None:
    def rec(side: str, rnd: int, value: float, status: str = "ok") -> dict[str, object]:
        return {
            "case": "c1",
            "side": side,
            "label": {"A": "one", "B": "two"}[side],
            "round": rnd,
            "status": status,
            "error": None if status == "ok" else "boom",
            "metrics": {"rate": value, "p99": value / 100},
            "directions": {"rate": True, "p99": False},
        }

    records = [
        rec("A", 0, 100), rec("B", 0, 300), rec("B", 1, 500), rec("A", 1, 200),
        rec("A", 2, 150), rec("B", 2, 9999, status="aborted"),
    ]  # fmt: skip
    label_a, label_b, rows = compare.summarize_records(records)
    assert (label_a, label_b) == ("one", "two")
    assert rows[0][:4] == ("c1", "rate ↑", 150.0, 400.0)
    assert rows[0][4] == pytest.approx(400 / 150)
    assert rows[1][1] == "p99 ↓"
    table = compare.markdown_table(records)
    assert "| c1 | rate ↑ | 150.0 | 400.0 | 2.67 |" in table
    assert "not counted: c1 two round 2: aborted (boom)" in table
