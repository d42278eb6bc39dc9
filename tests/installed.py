"""Where the tests find the commands that `pip install` put in the environment under test.

pytest may run from a virtual environment that is not activated (`venv/bin/python -m pytest`),
so its `bin/` need not be on PATH: a command installed next to `sys.executable` comes first,
then PATH.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def installed_command(name: str) -> str | None:
    """The path of console script `name` of this interpreter's environment, else from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(name)
