"""Settings: one frozen dataclass, filled from CLI flags and ``COLLAB_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click

#: The ASGI servers ``collab serve --server`` runs the app under; the first is the default.
SERVERS = ("uvicorn", "hypercorn")


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    type: Any = None,
    secret: bool = False,
    repeatable: bool = False,
) -> Any:
    """One setting: its default and what ``collab serve --help`` says of it.

    The command line is generated from these (``collab.cli``): each field becomes
    ``--field-name`` (or ``flag``) with the environment variable ``COLLAB_FIELD_NAME``.
    ``type`` is a click parameter type; ``secret`` values are never printed;
    ``repeatable`` flags may be given several times (a tuple; the environment variable
    holds them separated by spaces).
    """
    metadata = {"help": help, "flag": flag, "type": type, "secret": secret}
    metadata["repeatable"] = repeatable
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = setting("127.0.0.1", "Interface to listen on (0.0.0.0 for every interface).")
    port: int = setting(
        1234, "TCP port (1234 is the y-websocket convention).", type=click.IntRange(0, 65535)
    )
    #: The store (``collab.storage.open_store``): a SQLite database file, created with its
    #: parent folder on first use, given as a path (``data/collab.db``) or a URL
    #: (``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``). ``:memory:``
    #: keeps everything in memory (nothing survives a restart). ``postgresql://...`` is the
    #: store several nodes share (``collab.storage.postgres``).
    db: Path | str = setting(
        Path("data/collab.db"),
        "SQLite database file (a path or sqlite:///PATH), created if missing;"
        " ':memory:' keeps nothing; postgresql://USER@HOST/DB for a shared store.",
    )
    #: An update is never broadcast later because of it (fan-out does not wait for the disk).
    commit_delay: float = setting(
        0.02,
        "Seconds an update may wait so a burst shares one transaction.",
        type=click.FloatRange(0, 1),
    )
    idle_unload: float = setting(
        60.0, "Seconds a document with no connections stays in memory.", type=click.FloatRange(0)
    )
    #: Each queued frame is shared between peers, so the cost is a pointer per frame.
    send_queue_size: int = setting(
        4096,
        "Frames queued per connection before a slow client is dropped (4500).",
        flag="--send-queue",
        type=click.IntRange(1),
    )
    send_queue_bytes: int = setting(
        32 * 1024 * 1024,
        "Bytes queued per connection before a slow client is dropped (4500).",
        type=click.IntRange(64 * 1024),
    )
    max_message_size: int = setting(
        4 * 1024 * 1024,
        "Largest websocket frame accepted, in bytes (bigger ones close with 1009).",
        type=click.IntRange(1024),
    )
    frame_deadline: float = setting(
        30.0,
        "Seconds a websocket frame may take to arrive whole (slower ones: 1009).",
        type=click.FloatRange(1),
    )
    max_partial_bytes: int = setting(
        256 * 1024 * 1024,
        "Bytes of incomplete frames buffered for all connections together.",
        type=click.IntRange(1024 * 1024),
    )
    #: Real documents stay under 20; yrs crashes past ~32,000 (collab.structs).
    max_depth: int = setting(
        1000,
        "Deepest nesting of shared types a document may reach (deeper updates: 1007).",
        type=click.IntRange(1, 10_000),
    )
    #: 3 s: a peer whose network vanished (no close frame) is dropped, and its presence
    #: removed for everyone, within about 7 s; a ping costs a few bytes per interval.
    ping_interval: float = setting(
        3.0,
        "Seconds between websocket pings; a peer silent for two intervals is dropped.",
        type=click.FloatRange(0.1),
    )
    #: y-protocols: 30.
    awareness_timeout: float = setting(
        30.0,
        "Seconds without renewal after which an awareness state expires.",
        type=click.FloatRange(1),
    )
    #: Proxies end a response that stays silent (nginx after 60 s); a comment line keeps an
    #: idle event stream open, and a write to a reader that vanished ends its stream.
    sse_keepalive: float = setting(
        15.0,
        "Seconds an event stream (GET /api/docs/{name}/events) stays silent before a"
        " keep-alive comment.",
        type=click.FloatRange(0.05),
    )
    compact_rows: int = setting(
        500,
        "Compact a document's log in the background once it has this many rows...",
        type=click.IntRange(2),
    )
    compact_bytes: int = setting(1024 * 1024, "...or this many bytes.", type=click.IntRange(1))
    #: Costs about the size of the uncompacted log of that period (docs/storage.md).
    retention: float = setting(
        7 * 24 * 3600.0,
        "Seconds of history kept for `collab docs export/restore --at`.",
        type=click.FloatRange(0),
    )
    # -- several nodes ------------------------------------------------------------------
    #: docs/bus.md. Nodes on one bus must share one store (one SQLite file on one machine).
    bus: str = setting(
        "local",
        "Fan-out between collab nodes: local (this process alone), redis://HOST:6379/0"
        " or nats://HOST:4222.",
    )
    bus_prefix: str = setting(
        "collab",
        "Prefix of the bus's channels (subjects): nodes with the same one form a cluster.",
    )
    #: 2 s: a dead node's cursors vanish elsewhere within 6-8 s; a heartbeat costs each
    #: node one small message per node per interval.
    bus_heartbeat: float = setting(
        2.0,
        "Seconds between a node's heartbeats on the bus; a node silent for 3 of them is"
        " taken for dead and its clients' presence removed.",
        type=click.FloatRange(0.05),
    )
    #: Bounds how long an update the bus lost stays missing on another node; costs one
    #: state vector per open document per node per interval, and a delete set per answer.
    bus_sync_interval: float = setting(
        10.0,
        "Seconds between the state exchanges that heal what the bus lost.",
        type=click.FloatRange(0.05),
    )
    synchronous: str = setting(
        "NORMAL",
        "SQLite synchronous level: NORMAL survives a crash of the process, FULL also a "
        "power loss (one fsync per group commit).",
        type=click.Choice(["NORMAL", "FULL"], case_sensitive=False),
    )
    server: str = setting(
        "uvicorn",
        "ASGI server to run under: uvicorn (websockets, uvloop, httptools) or hypercorn.",
        type=click.Choice(SERVERS),
    )
    log_level: str = setting(
        "info", "Logging verbosity.", type=click.Choice(["debug", "info", "warning", "error"])
    )
    log_format: str = setting(
        "auto",
        "Log lines as json or text; auto is text on a terminal and JSON lines elsewhere.",
        type=click.Choice(["auto", "json", "text"]),
    )
    # -- access ------------------------------------------------------------------------
    jwt_secret: str | None = setting(
        None, "HS256 secret (32 bytes or more) that signs access tokens.", secret=True
    )
    jwt_public_key: Path | None = setting(
        None,
        "RS256/ES256 public key (PEM) or JWKS file that verifies access tokens.",
        type=click.Path(dir_okay=False, path_type=Path),
    )
    jwt_audience: str | None = setting(None, "Required `aud` claim of access tokens.")
    jwt_issuer: str | None = setting(None, "Required `iss` claim of access tokens.")
    anonymous: str = setting(
        "auto",
        "Access of a connection without a token: none, read or write; auto is write"
        " while bound to loopback with no token key, else none.",
        type=click.Choice(["auto", "none", "read", "write"]),
    )
    allowed_origins: tuple[str, ...] = setting(
        (),
        "Browser origin allowed besides the server's own (https://app.example); * for"
        " any. Repeatable.",
        flag="--allowed-origin",
        repeatable=True,
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "Host name clients may use to reach the server (default: the bind address and"
        " localhost; any when bound to every interface). Repeatable.",
        flag="--allowed-host",
        repeatable=True,
    )
    #: nginx's address (or network): behind a proxy every connection comes from it, and
    #: the client's own address is in X-Forwarded-For (collab.transport.forwarded).
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "Address or network (10.0.0.0/8) of a reverse proxy whose X-Forwarded-For names"
        " the client. Repeatable.",
        flag="--trusted-proxy",
        repeatable=True,
    )
    metrics_token: str | None = setting(
        None,
        "Bearer token that /metrics and /api/stats require; without one they answer"
        " loopback clients only.",
        secret=True,
    )
    # -- limits ------------------------------------------------------------------------
    rate_messages: float = setting(
        1000.0,
        "Messages per second a connection may send, sustained (past its burst: 1008).",
        type=click.FloatRange(1),
    )
    burst_messages: float = setting(
        20_000.0, "Messages a connection may send in a burst.", type=click.FloatRange(1)
    )
    rate_bytes: float = setting(
        4 * 1024 * 1024,
        "Bytes per second a connection may send, sustained (past its burst: 1008).",
        type=click.FloatRange(1024),
    )
    burst_bytes: float = setting(
        32 * 1024 * 1024,
        "Bytes a connection may send in a burst (at least the largest frame).",
        type=click.FloatRange(1024),
    )
    max_connections: int = setting(
        0,
        "Open connections in total (0: as many as the file-descriptor limit allows,"
        " less a reserve).",
        type=click.IntRange(0),
    )
    max_connections_per_address: int = setting(
        1000, "Open connections from one client address.", type=click.IntRange(1)
    )
    max_connections_per_document: int = setting(
        1000, "Open connections to one document.", type=click.IntRange(1)
    )
    max_document_bytes: int = setting(
        64 * 1024 * 1024,
        "Largest a document may grow, in bytes of its Yjs encoding (past it: 1008).",
        type=click.IntRange(1024),
    )
    max_open_documents: int = setting(
        10_000,
        "Documents held in memory at once; idle ones are unloaded first (past it: 1013).",
        type=click.IntRange(1),
    )
    max_awareness_state: int = setting(
        16 * 1024,
        "Largest awareness state (a user's name, colour, cursor) in bytes of JSON.",
        type=click.IntRange(256),
    )
    max_awareness_bytes: int = setting(
        4 * 1024 * 1024,
        "Awareness states a document may hold, in bytes of JSON.",
        type=click.IntRange(1024),
    )
    # -- webhooks (collab.webhooks) ----------------------------------------------------
    webhooks: tuple[str, ...] = setting(
        (),
        "URL (http or https) sent a signed JSON POST when a document changed. Repeatable.",
        flag="--webhook",
        repeatable=True,
    )
    webhook_secret: str | None = setting(
        None,
        "Key (32 bytes or more) of the HMAC-SHA256 signature in X-Collab-Signature.",
        secret=True,
    )
    #: 2 s: a typing burst becomes one call; a receiver hears of a change 2 s after it
    #: stopped (at most --webhook-max-wait after it started).
    webhook_debounce: float = setting(
        2.0,
        "Seconds without a further change before a document's webhook call goes out.",
        type=click.FloatRange(0),
    )
    webhook_max_wait: float = setting(
        10.0,
        "Most seconds a change waits for the debounce while edits keep coming.",
        type=click.FloatRange(0),
    )
    #: 8 attempts, 1 s doubling (with jitter) to at most 5 min apart: about 2 min of retries.
    webhook_attempts: int = setting(
        8, "Attempts per webhook call before it is given up.", type=click.IntRange(1, 100)
    )
    webhook_retry_delay: float = setting(
        1.0,
        "Seconds before the first retry of a failed webhook call; doubles each time.",
        type=click.FloatRange(0),
    )
    webhook_timeout: float = setting(
        10.0,
        "Seconds a webhook request may take in all (connect, send, answer).",
        type=click.FloatRange(0.1),
    )
    webhook_concurrency: int = setting(
        4, "Webhook requests in flight at once, per URL.", type=click.IntRange(1, 256)
    )
    webhook_queue_size: int = setting(
        10_000,
        "Documents with a webhook call waiting, per URL; changes past it are dropped.",
        flag="--webhook-queue",
        type=click.IntRange(1),
    )
    webhook_queue_bytes: int = setting(
        16 * 1024 * 1024,
        "Bytes those waiting calls may hold, per URL.",
        type=click.IntRange(64 * 1024),
    )

    @property
    def db_path(self) -> str:
        return str(self.db)


def flag_of(name: str) -> str:
    """The command-line flag of the setting ``name``."""
    for f in fields(Settings):
        if f.name == name:
            return f.metadata.get("flag") or "--" + name.replace("_", "-")
    raise KeyError(name)


def envvar_of(name: str) -> str:
    """The environment variable of the setting ``name``: ``COLLAB_`` and the flag."""
    return "COLLAB_" + flag_of(name).removeprefix("--").replace("-", "_").upper()
