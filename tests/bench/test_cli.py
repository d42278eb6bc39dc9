"""Option parsing, per-scenario defaults, limits and the progress bar (no network)."""

import io

import pytest

from bench import cli
from bench.config import DEFAULT_CONNECTIONS, DEFAULT_RATE, MAX_DURATION
from bench.progress import Progress


def test_defaults_per_scenario() -> None:
    for name in DEFAULT_CONNECTIONS:
        cfg = cli.prepare([name])
        assert cfg.scenario == name
        assert cfg.connections == DEFAULT_CONNECTIONS[name]
        assert cfg.rate == DEFAULT_RATE[name]
        assert (cfg.host, cfg.connect_host, cfg.port) == ("127.0.0.1", "127.0.0.1", 6001)
        assert (cfg.app_id, cfg.key, cfg.secret) == ("app-id", "app-key", "app-secret")
        assert cfg.duration == 10.0
        assert "secret" not in cfg.public()


def test_scenario_flag_and_overrides() -> None:
    cfg = cli.prepare(
        [
            "--scenario",
            "fanout",
            "--connections",
            "7",
            "--rate",
            "0",
            "--processes",
            "2",
            "--duration",
            "3.5",
            "--out",
            "/tmp/x",
            "--label",
            "demo",
        ]
    )
    assert (cfg.scenario, cfg.connections, cfg.rate, cfg.processes) == ("fanout", 7, 0.0, 2)
    assert (cfg.duration, cfg.out, cfg.label) == (3.5, "/tmp/x", "demo")
    assert len(cfg.run_id) == 8


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fanout", "--scenario", "http"],
        ["nope"],
        ["fanout", "--duration", str(MAX_DURATION + 1)],
        ["fanout", "--duration", "0"],
        ["fanout", "--connections", "0"],
        ["fanout", "--processes", "0"],
        ["fanout", "--rate", "-1"],
        ["client-events", "--connections", "1"],
        ["client-events", "--rate", "0", "--window", "0"],
        ["presence", "--rate", "0"],
    ],
)
def test_bad_options_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.prepare(argv)
    assert exc.value.code == 2


def test_warnings() -> None:
    fast = cli.prepare(["client-events", "--rate", "20"])
    assert any("4301" in w for w in cli.warnings_for(fast))
    flat_out = cli.prepare(["client-events", "--rate", "0"])
    assert any("--window" in w for w in cli.warnings_for(flat_out))
    assert cli.warnings_for(cli.prepare(["client-events", "--rate", "10"])) == []
    crowded = cli.prepare(["presence", "--connections", "150"])
    assert any("members" in w for w in cli.warnings_for(crowded))
    assert cli.warnings_for(cli.prepare(["presence"])) == []


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_without_a_tty() -> None:
    stream = io.StringIO()
    bar = Progress(enabled=True, stream=stream)
    bar.update("fanout", 1, 10, "x")
    bar.finish()
    assert stream.getvalue() == ""


def test_progress_redraws_one_line_on_a_tty() -> None:
    stream = FakeTTY()
    bar = Progress(enabled=True, stream=stream)
    bar.update("fanout", 5, 10, "recv 1/2")
    bar.update("fanout", 10, 10, "done")
    bar.finish()
    out = stream.getvalue()
    assert out.count("\r") == 2 and out.endswith("\n")
    assert "[############------------]" in out and "[########################]" in out
    assert Progress(enabled=False, stream=FakeTTY()).enabled is False
