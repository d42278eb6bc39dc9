"""The Pusher protocol core, sans-I/O: client commands, server frames, names, errors, and
WebSocket framing. Nothing here touches a socket or an event loop (design rule 1).
"""
