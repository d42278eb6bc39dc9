"""The asyncio side of one process, and its composition root (`server`): the HTTP and
WebSocket protocol objects (`http_connection`, `websocket_connection`), what they may see of
the server (`state`), and write corking with backpressure (`flow`). Floor 6: only the
command line sits above it."""
