"""The Pusher protocol core, sans-I/O: client commands, server frames, names, errors,
WebSocket framing and the per-connection session state machine (`session`). Nothing here
touches a socket, an event loop or a clock (design rule 1).
"""
