"""The one error taxonomy of pyserver: every fault a client or an API caller can cause.

Invariants:
- One class per Pusher code pyserver sends (from the 4000-4302 of `spec/protocol.md` §10),
  plus the few code-less errors hosted Pusher sends (`code: null`, e.g. a bad subscription
  signature). Codes nothing raises have no class (4000 SSL only, 4200 generic reconnect,
  4202 closed after inactivity): a class is added with its first raiser. (`OverCapacity` is
  kept for the descriptor-limit work that raises it at the handshake.)
- Each class says, once, whether the fault is answered with a `pusher:error` frame while the
  connection stays open (`closes = False`) or ends the connection with its close code
  (`closes = True`). Handlers raise; they never build error frames themselves. The transport
  layer turns a raised error into bytes through `pyserver.protocol.frames`.
- HTTP API errors are `ApiError` with a real HTTP status; they never reach a WebSocket.

This module imports nothing but the standard library.
"""

from __future__ import annotations


class PusherError(Exception):
    """A fault reported to one WebSocket client.

    Attributes:
        code: the Pusher error code sent in `pusher:error` and, when closing, the close code.
            `None` for the code-less errors hosted Pusher sends.
        closes: True when the connection ends with `code` after the error frame.
    """

    code: int | None = None
    closes: bool = False
    default_message: str = "Error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class ClosingError(PusherError):
    """An error that ends the connection with its code."""

    closes = True


# --- 4000-4099: the connection must not be retried as is -------------------------------------


class AppNotFound(ClosingError):
    code = 4001
    default_message = "Application does not exist"


class AppDisabled(ClosingError):
    code = 4003
    default_message = "Application disabled"


class OverConnectionQuota(ClosingError):
    code = 4004
    default_message = "Application is over connection quota"


class PathNotFound(ClosingError):
    code = 4005
    default_message = "Path not found"


class InvalidVersionFormat(ClosingError):
    code = 4006
    default_message = "Invalid version string format"


class UnsupportedProtocol(ClosingError):
    code = 4007
    default_message = "Unsupported protocol version"


class NoProtocolVersion(ClosingError):
    code = 4008
    default_message = "No protocol version supplied"


class ConnectionUnauthorized(ClosingError):
    code = 4009
    default_message = "Connection not authorized within timeout"


class OriginNotAllowed(ClosingError):
    """The browser page's origin is not in the app's `allowed_origins` (an extension)."""

    code = 4009
    default_message = "Origin not allowed"


class UserTerminated(ClosingError):
    """The app terminated every connection of this user (HTTP API `terminate_connections`)."""

    code = 4009
    default_message = "You got disconnected by the app: user connections terminated"


# --- 4100-4199: reconnect after backing off ---------------------------------------------------


class OverCapacity(ClosingError):
    code = 4100
    default_message = "Over capacity"


class SlowConsumer(ClosingError):
    """The client stopped reading and its write buffer passed the cap."""

    code = 4100
    default_message = "Over capacity: client is not reading its messages fast enough"


# --- 4200-4299: reconnect immediately ---------------------------------------------------------


class ServerShuttingDown(ClosingError):
    code = 4200
    default_message = "Server is shutting down, reconnect"


class PongNotReceived(ClosingError):
    code = 4201
    default_message = "Pong reply not received"


# --- 4300-4399: reported without closing (a 43xx close makes pusher-js give up) -------------


class ClientEventRejected(PusherError):
    """A client event that is not allowed (name, channel type, not subscribed, size, switch)."""

    code = 4301
    default_message = "Client event rejected"


class ClientEventRateLimited(PusherError):
    code = 4301
    default_message = "Client event rejected due to rate limit"


class WatchlistLimitExceeded(PusherError):
    code = 4302
    default_message = "Watchlist limit exceeded"


class BadMessage(PusherError):
    """A frame that is not a Pusher message: not JSON, wrong shape, binary, unknown event."""

    code = None
    default_message = "Invalid message"


class SigninFailed(PusherError):
    """A `pusher:signin` that cannot be accepted; the connection stays usable."""

    code = None
    default_message = "Signin failed"


class SubscriptionError(PusherError):
    """A subscribe that is refused. Sent as `pusher:error` (hosted Pusher's text, `code: null`)
    and as `pusher:subscription_error` on the channel, so channel listeners and Laravel Echo's
    `.error()` see it too. `status` follows the HTTP meaning (401 auth, 400 bad input, 403 limit).
    """

    code = None
    status = 400
    error_type = "SubscriptionError"

    def __init__(self, channel: str, message: str) -> None:
        super().__init__(message)
        self.channel = channel


class SubscriptionAuthError(SubscriptionError):
    status = 401
    error_type = "AuthError"


class SubscriptionLimitError(SubscriptionError):
    status = 403
    error_type = "LimitReached"


# --- HTTP API ---------------------------------------------------------------------------------


class ApiError(Exception):
    """An HTTP API request that fails; `status` is the HTTP status code sent back."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class PayloadTooLarge(ApiError):
    status = 413


class Unavailable(ApiError):
    """A dependency the answer needs (the history store in Redis) cannot be reached."""

    status = 503


class TooManyRequests(ApiError):
    """The app's `max_backend_events_per_second` or `max_read_requests_per_second` is spent."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
