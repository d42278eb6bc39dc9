"""Test-only: lower this process's descriptor limit, as a host with a hard cap would.

Put this folder on PYTHONPATH and set `TEST_NOFILE_LIMIT`: one number caps every Python
process started so; a comma-separated list caps worker N of `pyserver --workers` at the Nth
number (`PYSERVER_WORKER_INDEX`) and leaves the supervisor alone. Both the soft and the hard
limit are lowered, so the server's own raise to the hard limit cannot undo it.
"""

import os
import resource

_limits = os.environ.get("TEST_NOFILE_LIMIT", "")
if _limits:
    _values = [int(v) for v in _limits.split(",")]
    _index = os.environ.get("PYSERVER_WORKER_INDEX")
    _limit = None
    if len(_values) == 1:
        _limit = _values[0]
    elif _index is not None and int(_index) < len(_values):
        _limit = _values[int(_index)]
    if _limit is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_limit, _limit))
