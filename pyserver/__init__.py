"""pyserver: a self-hosted WebSocket server that speaks the Pusher Channels protocol."""

__version__ = "0.1.0"
