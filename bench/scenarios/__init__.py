"""The scenarios, by name: each pairs a worker `Role` with a parent `Driver`."""

from __future__ import annotations

from dataclasses import dataclass

from bench.scenarios.base import Driver, Role
from bench.scenarios.catchup import CatchupDriver, CatchupRole
from bench.scenarios.channels import ChannelsDriver, ChannelsRole
from bench.scenarios.client_events import ClientEventsDriver, ClientEventsRole
from bench.scenarios.fanout import FanoutDriver, FanoutRole
from bench.scenarios.http_triggers import HTTPDriver, HTTPRole
from bench.scenarios.idle import IdleDriver, IdleRole
from bench.scenarios.presence import PresenceDriver, PresenceRole


@dataclass(frozen=True)
class Scenario:
    name: str
    role: type[Role]
    driver: type[Driver]
    summary: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("fanout", FanoutRole, FanoutDriver, "N subscribers on one channel, HTTP triggers"),
        Scenario(
            "channels", ChannelsRole, ChannelsDriver, "N channels, one subscriber each, triggers"
        ),
        Scenario("http", HTTPRole, HTTPDriver, "HTTP trigger rate over K keep-alive connections"),
        Scenario("idle", IdleRole, IdleDriver, "open N idle connections: rate, failures, RSS"),
        Scenario(
            "client-events",
            ClientEventsRole,
            ClientEventsDriver,
            "pairs on private channels relaying client events",
        ),
        Scenario(
            "presence", PresenceRole, PresenceDriver, "presence join/leave churn seen by watchers"
        ),
        Scenario(
            "catchup",
            CatchupRole,
            CatchupDriver,
            "returning subscribers catch up on history while watchers probe the server",
        ),
    )
}
