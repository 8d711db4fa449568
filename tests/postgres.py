"""PostgreSQL for tests: a fresh database per test on the machine's server, and a TCP
proxy that a test can cut to make the database unreachable without stopping it.

The server is ``COLLAB_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``,
trust auth); each database made here is ``collab_test_<random>`` and is dropped after
its test (or, for the conformance suite's, when the test process exits). When the server
cannot be reached the test is skipped, unless ``CI=true``: then it fails.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

#: The server the tests create their databases on (its ``dbname`` is only connected to).
SERVER = os.environ.get("COLLAB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def url_of(dbname: str, *, port: int | None = None) -> str:
    """The URL of database ``dbname`` on the test server (through ``port`` if given)."""
    params = conninfo_to_dict(SERVER)
    host = params.get("host", "127.0.0.1")
    user = params.get("user", "postgres")
    return f"postgresql://{user}@{host}:{port or params.get('port', 5432)}/{dbname}"


def require_postgres() -> None:
    """Skip the test if the server cannot be reached; under ``CI=true``, fail it."""
    try:
        with psycopg.connect(SERVER, connect_timeout=3):
            pass
    except psycopg.OperationalError as e:
        message = f"PostgreSQL at {SERVER} is unreachable: {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def create_database() -> str:
    """A new empty database on the test server; returns its name."""
    require_postgres()
    name = f"collab_test_{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    """Drop ``name``, disconnecting whoever is still connected to it."""
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database for the block; yields its URL and drops it afterwards."""
    name = create_database()
    try:
        yield url_of(name)
    finally:
        drop_database(name)


_made_for_suite: list[str] = []


def database_for_suite() -> str:
    """A new database whose URL lives until the test process exits (the conformance
    suite's entries have no teardown of their own); returns its URL."""
    name = create_database()
    if not _made_for_suite:
        atexit.register(_drop_suite_databases)
    _made_for_suite.append(name)
    return url_of(name)


def _drop_suite_databases() -> None:
    for name in _made_for_suite:
        with suppress(psycopg.Error):
            drop_database(name)


def terminate_connections(url: str) -> int:
    """``pg_terminate_backend`` every connection to the database of ``url`` but ours."""
    dbname = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(SERVER, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
        row = cur.fetchone()
    return int(row[0]) if row else 0


class TcpProxy:
    """A TCP proxy on a free loopback port in front of the test server.

    :meth:`cut` closes every connection through it and closes each new one at once (the
    database looks down: connection refused mid-startup); :meth:`restore` lets them through
    again. Use as a context manager; the threads end with it.
    """

    def __init__(self) -> None:
        params = conninfo_to_dict(SERVER)
        self.target = (params.get("host", "127.0.0.1"), int(params.get("port", 5432)))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)

    def url(self, dbname: str) -> str:
        """The URL of ``dbname`` through the proxy."""
        return url_of(dbname, port=self.port)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
        self._thread.join(5)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, set()
        for s in sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    continue
                self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
