"""The live debug console (placeholder until its page lands): routes under `/console`.

`Console` is an `AppObserver` (it sees what happens in every app) and answers the HTTP
requests whose path starts with `/console`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserver.channels.observer import AppObserver
from pyserver.server.http import Request, Response, error_response

if TYPE_CHECKING:
    from pyserver.server.server import Server


class Console(AppObserver):
    def __init__(self, server: Server) -> None:
        self.server = server

    def handle(self, request: Request) -> Response:
        return error_response(404, "The debug console is not built yet")
