"""Load generator for Pusher Channels protocol v7 servers (pyserver, soketi, others).

Run it from the repository root as `python -m bench SCENARIO [options]`; see `bench/README.md`.
Only loopback targets are accepted unless `--allow-remote` is given.
"""
