"""App stores: where apps come from when they change at run time (`app_store`).

Floor 1 of the layering: imports only `pyserver.config`, `pyserver.protocol`, `pyserver.auth`,
the standard library and third-party packages; nothing from the server, channels, API,
console or cluster. The running server keeps an in-memory directory of apps
(`directory.py`) refreshed from a store with `changes(cursor)`; it never awaits a store on
the connection path.

- `store.py`: the `AppStore` interface and the read-only `config` store.
- `sql.py`, `schema.py`, `drivers.py`: the SQLite, PostgreSQL and MySQL/MariaDB store.
- `records.py`: a stored app, validation, rows. `errors.py`: the store's errors.
- `factory.py`: from `app_store` to an open store. `cli.py`: `pyserver apps`.
- `directory.py`: a node's copy of its store, the refresh, lookups of unknown names, health.
- `present.py`: an app as JSON (secrets only when asked) and option values from text, shared
  by `pyserver apps` and the console's Apps page.
"""

from pyserver.apps.errors import AppStoreError
from pyserver.apps.factory import open_app_store, seed_apps, store_for, store_for_url
from pyserver.apps.records import ChangeSet, StoredApp
from pyserver.apps.store import AppStore

__all__ = [
    "AppStore",
    "AppStoreError",
    "ChangeSet",
    "StoredApp",
    "open_app_store",
    "seed_apps",
    "store_for",
    "store_for_url",
]
