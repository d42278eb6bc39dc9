"""The errors of the app store: every way a store operation can be refused or fail.

Invariants:
- Every store operation raises only `AppStoreError` subclasses (a driver's own exceptions
  are translated at the driver boundary), so callers handle one taxonomy.
- Each message is a sentence an operator can act on; it names the app, the field or the
  extra to install, and never contains a secret or a database password.
- `exit_status` is what `pyserver apps` exits with: 1 for a refused operation (the input or
  the state is wrong), 3 when the store cannot be used at all (unreachable, driver missing,
  schema newer than this pyserver). 2 is argparse's and the configuration's.

These are operator-facing errors, distinct from `pyserver.protocol.errors`, which are the
faults of WebSocket clients and API callers with their wire codes. The later integration maps
a store's state (disabled, removed) to those codes; it never sends these messages to clients.
"""

from __future__ import annotations


class AppStoreError(Exception):
    """A store operation that was refused or failed; `str()` is the message for the operator."""

    exit_status = 1


# --- refused: the input or the current state does not allow the operation --------------------


class UnknownApp(AppStoreError):
    """No app has this id."""

    def __init__(self, app_id: str) -> None:
        super().__init__(f"no app with id {app_id!r}")
        self.app_id = app_id


class DuplicateApp(AppStoreError):
    """Another app already has this id or key."""

    @classmethod
    def of_id(cls, app_id: str) -> DuplicateApp:
        return cls(f"an app with id {app_id!r} already exists")

    @classmethod
    def of_key(cls, key: str, owner: str) -> DuplicateApp:
        return cls(f"the key {key!r} is already used by app {owner!r}")


class InvalidApp(AppStoreError):
    """An option that does not exist, or a value the app model refuses; names the field."""


class ReadOnlyStore(AppStoreError):
    """`app_store = "config"`: apps come from the configuration and are changed there."""

    def __init__(self) -> None:
        super().__init__(
            'app_store = "config" is read-only: edit the [[apps]] of the configuration file '
            "(or PYSERVER_APPS), or set app_store to a database URL (docs/apps.md)"
        )


# --- unusable: the store cannot serve any operation -----------------------------------------


class StoreUnavailable(AppStoreError):
    """The database cannot be reached or answered with an error (message names the URL,
    without its password)."""

    exit_status = 3


class DriverMissing(AppStoreError):
    """The store URL needs a database driver that is not installed; names the extra."""

    exit_status = 3


class InvalidStoreUrl(AppStoreError):
    """An `app_store` value that names no store this pyserver can open."""

    exit_status = 3


class SchemaTooNew(AppStoreError):
    """The database was migrated by a newer pyserver; this one does not know its schema."""

    exit_status = 3
