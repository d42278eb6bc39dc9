"""The `pyserver` command: parse flags, load settings, run the server until a signal.

`pyserver [--host H] [--port P] [--config FILE]`; every other option comes from the config
file or `PYSERVER_*` environment variables (see `pyserver.config`). A bad configuration
exits with status 2 and a message naming the field. SIGTERM/SIGINT drain gracefully; a
second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from typing import Any

from pyserver import __version__
from pyserver.auth.protected import exposure_warning
from pyserver.config import ConfigError, Settings, load_settings, unknown_environment
from pyserver.logs import configure
from pyserver.server.capacity import raise_descriptor_limit

log = logging.getLogger("pyserver")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pyserver",
        description="A self-hosted WebSocket server for the Pusher Channels protocol.",
        epilog="Manage the apps of a database app store: pyserver apps --help",
    )
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port for WebSocket and HTTP API (default 6001)")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--workers", type=int, help="processes sharing the port (needs adapter = redis)"
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--version", action="version", version=f"pyserver {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["apps"]:
        from pyserver.apps.cli import main as apps_main

        return apps_main((sys.argv[1:] if argv is None else argv)[1:])
    args = parse_args(argv)
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "workers": args.workers,
    }
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"pyserver: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    before, after = raise_descriptor_limit()  # one descriptor per connection: use them all
    if after != before and "PYSERVER_WORKER_INDEX" not in os.environ:
        log.info("descriptor limit raised from %d to %d (the hard limit)", before, after)
    if "PYSERVER_WORKER_INDEX" not in os.environ:  # the supervisor has warned already
        for warning in [*unknown_environment(os.environ), *settings.warnings()]:
            log.warning(warning)
        if settings.default_secret_apps():
            log.warning(exposure_warning(settings.default_secret_apps(), settings.protected_mode))
    if settings.workers > 1:
        from pyserver.workers import supervise

        return supervise(settings, sys.argv[1:] if argv is None else argv)
    if settings.use_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            log.warning("uvloop is not installed; using the default asyncio loop")
    try:
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:
        return 0


async def _serve(settings: Settings) -> int:
    from pyserver.apps.errors import AppStoreError
    from pyserver.server.server import Server  # here, so `pyserver apps` starts faster

    try:
        server = Server(settings)
    except AppStoreError as exc:  # a bad app_store URL, or its driver is not installed
        log.error("%s", exc)
        return exc.exit_status
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting now")
            raise SystemExit(1)
        log.info("received %s: draining connections", signal.Signals(signum).name)
        stop.set()

    # Before listening: a signal that arrives as soon as the port is announced must drain,
    # not kill the process with the default action.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        addresses = await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    except AppStoreError as exc:  # e.g. a schema written by a newer pyserver
        log.error("%s", exc)
        await server.shutdown(0)
        return exc.exit_status
    # Everything made so far lives as long as the process: keep the cyclic collector off it,
    # and collect less often, so tens of thousands of connections cause no long pauses.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    log.info(
        "pyserver %s listening on %s (WebSocket /app/{key}, HTTP API /apps/{id}/...)",
        __version__,
        ", ".join(addresses),
    )
    for line in settings.describe():
        log.info(line)

    await stop.wait()
    await server.shutdown()
    log.info("stopped")
    return 0
