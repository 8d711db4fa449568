"""The ``collab`` command: thin wrappers that build Settings and call one library function."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import click

from collab import __version__
from collab.config import Settings
from collab.errors import CollabError

DEFAULTS = Settings()


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="collab")
def cli() -> None:
    """collab: a Yjs-compatible collaborative-editing sync server.

    Stock y-websocket clients connect to ws://HOST:PORT/<doc-name>; every update is
    stored in SQLite and survives restarts.
    """


@cli.command()
@click.option(
    "--host",
    envvar="COLLAB_HOST",
    default=DEFAULTS.host,
    show_envvar=True,
    help="Interface to listen on (0.0.0.0 for every interface).",
)
@click.option(
    "--port",
    envvar="COLLAB_PORT",
    default=DEFAULTS.port,
    type=click.IntRange(0, 65535),
    show_envvar=True,
    help="TCP port (1234 is the y-websocket convention).",
)
@click.option(
    "--db",
    envvar="COLLAB_DB",
    default=str(DEFAULTS.db),
    show_envvar=True,
    help="SQLite database file, created if missing; ':memory:' keeps nothing.",
)
@click.option(
    "--commit-delay",
    envvar="COLLAB_COMMIT_DELAY",
    default=DEFAULTS.commit_delay,
    type=click.FloatRange(0, 1),
    show_envvar=True,
    help="Seconds an update may wait so a burst shares one transaction.",
)
@click.option(
    "--idle-unload",
    envvar="COLLAB_IDLE_UNLOAD",
    default=DEFAULTS.idle_unload,
    type=click.FloatRange(0),
    show_envvar=True,
    help="Seconds a document with no connections stays in memory.",
)
@click.option(
    "--send-queue",
    "send_queue_size",
    envvar="COLLAB_SEND_QUEUE",
    default=DEFAULTS.send_queue_size,
    type=click.IntRange(1),
    show_envvar=True,
    help="Frames queued per connection before a slow client is dropped (4500).",
)
@click.option(
    "--max-message-size",
    envvar="COLLAB_MAX_MESSAGE_SIZE",
    default=DEFAULTS.max_message_size,
    type=click.IntRange(1024),
    show_envvar=True,
    help="Largest websocket frame accepted, in bytes (bigger ones close with 1009).",
)
@click.option(
    "--ping-interval",
    envvar="COLLAB_PING_INTERVAL",
    default=DEFAULTS.ping_interval,
    type=click.FloatRange(0.1),
    show_envvar=True,
    help="Seconds between websocket pings; a peer silent for two intervals is dropped.",
)
@click.option(
    "--log-level",
    envvar="COLLAB_LOG_LEVEL",
    default=DEFAULTS.log_level,
    type=click.Choice(["debug", "info", "warning", "error"]),
    show_envvar=True,
    help="Logging verbosity.",
)
def serve(**options: Any) -> None:
    """Run the sync server under hypercorn until Ctrl-C or SIGTERM.

    On shutdown every connection is closed with 1001 (clients reconnect) and every
    pending update is committed before the process exits.

    Example:

        collab serve --port 1234 --db data/collab.db
    """
    settings = Settings(**options)
    _setup_logging(settings.log_level)
    from collab.server import serve as run_server

    try:
        anyio.run(run_server, settings)
    except CollabError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(
            f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}. "
            "Pick another --port or stop the process using it."
        ) from None


def main() -> None:
    cli(prog_name="collab")


__all__ = ["cli", "main"]
