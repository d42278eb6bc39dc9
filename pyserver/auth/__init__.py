"""Signatures: channel and user auth (WebSocket), HTTP API request signing, webhook signing.

Sans-I/O: pure functions over strings and bytes (design rule 1).
"""
