"""One small interface over the three database drivers, so the SQL store is written once.

- SQLite: the standard library's `sqlite3` on one worker thread of its own (a blocking
  driver kept off the event loop; aiosqlite would be the same thread around the same module,
  as a dependency). WAL journal, so `pyserver apps` and the server share the file.
- PostgreSQL: asyncpg (`pip install 'pyserver[postgres]'`), a pool of up to 4 connections.
- MySQL and MariaDB: aiomysql (`pip install 'pyserver[mysql]'`), a pool of up to 4
  connections, autocommit, strict and ANSI_QUOTES SQL mode. The server's isolation level is
  kept: REPEATABLE READ and READ COMMITTED are both correct, since a write transaction's
  first statement is the locking update of the change counter, so its reads start after
  every earlier write committed.

Invariants:
- SQL is written once with `?` placeholders and `"quoted"` identifiers; each driver converts.
- Every statement sent goes through `_count`, so `queries` is the number of statements the
  database saw (transaction control excluded): tests bound the queries a workload costs.
- A driver raises only `StoreUnavailable` (message with the URL, without its password) and
  `UniqueViolation` (for the store to name the duplicate); values come back as Python str,
  int, float or None, never bytes.
- A driver module's import fails with `DriverMissing`, naming the extra to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from pyserver.apps.errors import DriverMissing, InvalidStoreUrl, StoreUnavailable
from pyserver.config import mask_url

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a database connection before the store is reported unreachable."""
POOL_SIZE = 4
SCHEMA_LOCK_NAME = "pyserver_app_store_schema"
SCHEMA_LOCK_KEY = 0x70797365  # "pyse": PostgreSQL advisory locks take a number

Values = tuple[Any, ...]


class UniqueViolation(Exception):
    """An INSERT or UPDATE broke a unique index (the store turns it into DuplicateApp)."""


class Session(Protocol):
    """Statements on one connection, inside a transaction when given by `transaction()`."""

    async def fetch(self, sql: str, *args: Any) -> list[Values]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...


class Driver(ABC):
    dialect: str
    description: str

    def __init__(self) -> None:
        self.queries = 0

    def _count(self) -> None:
        self.queries += 1

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def session(self) -> contextlib.AbstractAsyncContextManager[Session]:
        """A connection in autocommit mode: each statement sees the latest commits."""

    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Session]:
        """A transaction; committed when the block ends, rolled back when it raises."""

    @abstractmethod
    def schema_lock(self) -> contextlib.AbstractAsyncContextManager[Session]:
        """A session holding the store's schema lock, so that one node at a time creates or
        migrates the schema (in one transaction where the database has transactional DDL)."""

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = str(exc) or type(exc).__name__
        return StoreUnavailable(f"app store {self.description} is unavailable: {reason}")


def _decode(row: Sequence[Any]) -> Values:
    return tuple(v.decode() if isinstance(v, bytes | bytearray) else v for v in row)


# --- SQLite ---------------------------------------------------------------------------------


SQLITE_BUSY_SECONDS = 10.0
"""How long an SQLite statement waits for another connection's lock before it fails."""


class SqliteDriver(Driver):
    """One sqlite3 connection, used from one worker thread; one statement or transaction at
    a time (an asyncio lock), as SQLite itself allows one writer."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.description = f"sqlite:///{path}"
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None, "the store is not open"
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from None
            raise self.unavailable(exc) from None
        except sqlite3.Error as exc:
            raise self.unavailable(exc) from None

    def _open(self) -> None:
        if not Path(self.path).parent.is_dir():
            raise sqlite3.OperationalError(f"the directory of {self.path} does not exist")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SECONDS * 1000)}")
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @staticmethod
    def _use_wal(conn: sqlite3.Connection) -> None:
        """Switch a new database file to WAL. When several nodes open the same new file at
        once, SQLite may answer "database is locked" to this pragma at once, without
        waiting for `busy_timeout` (the switch needs the file to itself), so it is retried
        here for as long as `busy_timeout` would wait."""
        deadline = time.monotonic() + SQLITE_BUSY_SECONDS
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    async def connect(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyserver-sqlite")
        await self._run(self._open)

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    def _fetch(self, sql: str, args: Values) -> list[Values]:
        assert self._conn is not None
        return [tuple(row) for row in self._conn.execute(sql, args).fetchall()]

    def _execute(self, sql: str, args: Values) -> int:
        assert self._conn is not None
        return self._conn.execute(sql, args).rowcount

    async def fetch(self, sql: str, *args: Any) -> list[Values]:
        self._count()
        result: list[Values] = await self._run(self._fetch, sql, args)
        return result

    async def execute(self, sql: str, *args: Any) -> int:
        self._count()
        result: int = await self._run(self._execute, sql, args)
        return result

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        async with self._lock:
            yield self

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self._lock:
            assert self._conn is not None, "the store is not open"
            conn = self._conn
            await self._run(conn.execute, "BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                await self._run(conn.execute, "ROLLBACK")
                raise
            await self._run(conn.execute, "COMMIT")

    def schema_lock(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self.transaction()  # BEGIN IMMEDIATE locks out every other writer


# --- the pooled drivers ---------------------------------------------------------------------


def _missing(module: str, scheme: str, extra: str) -> DriverMissing:
    return DriverMissing(
        f"app_store = {scheme}://… needs the {module} driver: pip install 'pyserver[{extra}]'"
    )


class _PooledDriver(Driver):
    """A driver over a connection pool; `_connection` gives a session, in a transaction when
    `begin`, holding the schema lock when `lock`."""

    @abstractmethod
    def _connection(
        self, begin: bool, lock: bool = False
    ) -> contextlib.AbstractAsyncContextManager[Session]: ...

    def session(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self._connection(begin=False)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self._connection(begin=True)


# --- PostgreSQL -----------------------------------------------------------------------------


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`, …"""
    counter = iter(range(1, 1_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class _PgSession:
    def __init__(self, driver: PostgresDriver, conn: Any) -> None:
        self._driver = driver
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Values]:
        self._driver._count()
        rows = await self._conn.fetch(self._driver.sql(sql), *args)
        return [tuple(row) for row in rows]

    async def execute(self, sql: str, *args: Any) -> int:
        self._driver._count()
        status: str = await self._conn.execute(self._driver.sql(sql), *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0


class PostgresDriver(_PooledDriver):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import asyncpg
        except ImportError:
            raise _missing("asyncpg", "postgresql", "postgres") from None
        self._asyncpg = asyncpg
        self.url = url
        self.description = mask_url(url)
        self._pool: Any = None
        self._sql: dict[str, str] = {}

    def sql(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = _numbered(sql)
        return converted

    def _errors(self) -> tuple[type[BaseException], ...]:
        """What asyncpg raises when the database is away or a connection broke. Its
        `InternalClientError` (a protocol state it did not expect, as when the server stops
        in the middle of a query) derives from neither of its other bases, and is one too."""
        pg = self._asyncpg
        return (
            OSError,
            asyncio.TimeoutError,
            pg.PostgresError,
            pg.InterfaceError,
            pg.InternalClientError,
        )

    async def connect(self) -> None:
        try:
            self._pool = await self._asyncpg.create_pool(
                self.url,
                # No floor: asyncpg restores one in the background and logs a traceback on
                # every try while the database is away; a connection is made when needed.
                min_size=0,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT,
                command_timeout=CONNECT_TIMEOUT,
            )
        except self._errors() as exc:
            raise self.unavailable(exc) from None
        except ValueError as exc:  # asyncpg's DSN parser
            raise InvalidStoreUrl(f"app_store {self.description}: {exc}") from None

    async def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(*self._errors()):
                await asyncio.wait_for(self._pool.close(), CONNECT_TIMEOUT)
            self._pool = None

    @contextlib.asynccontextmanager
    async def _connection(self, begin: bool, lock: bool = False) -> AsyncIterator[Session]:
        if self._pool is None:
            raise StoreUnavailable(f"app store {self.description} is not open")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                if not begin:
                    yield _PgSession(self, conn)
                    return
                async with conn.transaction():
                    if lock:
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
                    yield _PgSession(self, conn)
        except self._asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from None
        except self._errors() as exc:
            raise self.unavailable(exc) from None

    def schema_lock(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self._connection(begin=True, lock=True)  # PostgreSQL's DDL is transactional


# --- MySQL and MariaDB ----------------------------------------------------------------------


class _MySession:
    def __init__(self, driver: MysqlDriver, cursor: Any) -> None:
        self._driver = driver
        self._cursor = cursor

    async def fetch(self, sql: str, *args: Any) -> list[Values]:
        self._driver._count()
        await self._cursor.execute(sql.replace("?", "%s"), args or None)
        return [_decode(row) for row in await self._cursor.fetchall()]

    async def execute(self, sql: str, *args: Any) -> int:
        self._driver._count()
        await self._cursor.execute(sql.replace("?", "%s"), args or None)
        return int(self._cursor.rowcount)


class MysqlDriver(_PooledDriver):
    dialect = "mysql"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import aiomysql
        except ImportError:
            raise _missing("aiomysql", "mysql", "mysql") from None
        self._aiomysql = aiomysql
        self.description = mask_url(url)
        self._params = self._parse(url)
        self._pool: Any = None

    def _parse(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        unix_socket = query.pop("unix_socket", None)
        if query:
            raise InvalidStoreUrl(
                f"app_store {self.description}: unknown parameter {', '.join(sorted(query))} "
                "(only unix_socket is read)"
            )
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise InvalidStoreUrl(
                f"app_store {self.description}: name the database, as in "
                "mysql://user:password@host:3306/database"
            )
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise InvalidStoreUrl(f"app_store {self.description}: {exc}") from None
        return {
            "host": parts.hostname or "localhost",
            "port": port,
            "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""),
            "db": database,
            "unix_socket": unix_socket,
        }

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (OSError, asyncio.TimeoutError, self._aiomysql.MySQLError)

    async def connect(self) -> None:
        class QuietCursor(self._aiomysql.Cursor):  # type: ignore[name-defined,misc]
            """No SHOW WARNINGS round trip after a statement with notes, such as CREATE TABLE
            IF NOT EXISTS on an existing table (strict mode makes real problems errors)."""

            async def _show_warnings(self, conn: Any) -> None:
                return None

        try:
            self._pool = await self._aiomysql.create_pool(
                cursorclass=QuietCursor,
                minsize=1,
                maxsize=POOL_SIZE,
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=CONNECT_TIMEOUT,
                init_command=(
                    "SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
                ),
                **self._params,
            )
        except self._errors() as exc:
            raise self.unavailable(exc) from None

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            with contextlib.suppress(*self._errors()):
                await asyncio.wait_for(self._pool.wait_closed(), CONNECT_TIMEOUT)
            self._pool = None

    @contextlib.asynccontextmanager
    async def _connection(self, begin: bool, lock: bool = False) -> AsyncIterator[Session]:
        if self._pool is None:
            raise StoreUnavailable(f"app store {self.description} is not open")
        try:
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                session = _MySession(self, cursor)
                if lock:
                    # DDL commits implicitly in MySQL: a named lock keeps other nodes out.
                    await cursor.execute("SELECT GET_LOCK(%s, %s)", (SCHEMA_LOCK_NAME, 60))
                    if (await cursor.fetchone()) != (1,):
                        raise StoreUnavailable(
                            f"app store {self.description}: another node held the schema "
                            "lock for 60 s"
                        )
                    try:
                        yield session
                    finally:
                        await cursor.execute("SELECT RELEASE_LOCK(%s)", (SCHEMA_LOCK_NAME,))
                    return
                if not begin:
                    yield session
                    return
                await conn.begin()
                try:
                    yield session
                except BaseException:
                    await conn.rollback()
                    raise
                await conn.commit()
        except self._aiomysql.IntegrityError as exc:
            if exc.args and exc.args[0] == 1062:  # ER_DUP_ENTRY
                raise UniqueViolation(str(exc)) from None
            raise self.unavailable(exc) from None
        except self._errors() as exc:
            raise self.unavailable(exc) from None

    def schema_lock(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self._connection(begin=False, lock=True)
