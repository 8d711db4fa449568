"""The ``collab`` command: thin wrappers that build Settings and call one library function."""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio
import click

from collab import __version__, admin, logs, remote
from collab.auth import Access, ConfigError, TokenError, issue_token
from collab.config import Settings, envvar_of, flag_of
from collab.errors import CollabError, StoreError
from collab.history import format_time, parse_duration, parse_time, sessions
from collab.names import printable
from collab.storage import Store, open_store
from collab.storage.base import (
    CompactionResult,
    DatabaseBusyError,
    DatabaseDamagedError,
    DatabaseError,
    DocOrder,
)
from collab.updates import EMPTY_UPDATE

DEFAULTS = Settings()
T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="collab")
def cli() -> None:
    """collab: a Yjs-compatible collaborative-editing sync server.

    Stock y-websocket clients connect to ws://HOST:PORT/<doc-name>; every update is
    stored in SQLite and survives restarts.
    """


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` one option per :class:`Settings` field, as ``collab.config``
    defines it (flag, environment variable, default, type, help)."""
    for f in reversed(fields(Settings)):
        meta = f.metadata
        default = f.default
        if isinstance(default, Path):
            default = str(default)
        command = click.option(
            flag_of(f.name),
            f.name,
            envvar=envvar_of(f.name),
            default=default,
            type=meta.get("type"),
            multiple=bool(meta.get("repeatable")),
            show_envvar=True,
            show_default=not meta.get("secret") and default not in (None, ()),
            help=meta["help"],
        )(command)
    return click.option(
        "--config",
        "config",
        envvar="COLLAB_CONFIG",
        type=click.Path(dir_okay=False),
        default=None,
        is_eager=True,  # read before the others, whose defaults it sets
        expose_value=True,
        callback=_read_config_file,
        show_envvar=True,
        help="A TOML file of settings, keyed like the flags (max-message-size = 4194304)."
        " Precedence: flag, then environment, then this file, then the default.",
    )(command)


def _read_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    path = Path(value)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise click.BadParameter(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise click.BadParameter(f"{path} is not valid TOML: {e}") from None
    names = {f.name: f.name for f in fields(Settings)}
    repeatable = {f.name for f in fields(Settings) if f.metadata.get("repeatable")}
    names.update({flag_of(f.name).removeprefix("--"): f.name for f in fields(Settings)})
    defaults: dict[str, Any] = {}
    for key, setting in data.items():
        name = names.get(key) or names.get(key.replace("_", "-"))
        if name is None:
            raise click.BadParameter(
                f"{path}: unknown setting {key!r}; `collab serve --help` lists them"
            )
        # One value of a repeatable setting may be written without the list's brackets.
        defaults[name] = [setting] if name in repeatable and isinstance(setting, str) else setting
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@cli.command()
@settings_options
def serve(**options: Any) -> None:
    """Run the sync server under uvicorn (or hypercorn) until Ctrl-C or SIGTERM.

    On shutdown every connection is closed with 1001 (clients reconnect) and every
    pending update is committed before the process exits.

    Example:

        collab serve --port 1234 --db data/collab.db
    """
    settings = settings_from(options)
    logs.setup(settings.log_level, settings.log_format)
    from collab.server import serve as run_server

    try:
        anyio.run(run_server, settings, backend_options=_loop_options(settings))
    except CollabError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(
            f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}. "
            "Pick another --port or stop the process using it."
        ) from None


def settings_from(options: dict[str, Any]) -> Settings:
    """Settings from the parsed options of :func:`settings_options`."""
    options = {k: v for k, v in options.items() if k != "config"}
    values = {**options, "synchronous": options["synchronous"].upper()}
    defaults = Settings()
    for name, value in values.items():
        if value == "" and getattr(defaults, name) is None:
            values[name] = None  # COLLAB_JWT_SECRET= (empty) means not set
    for f in fields(Settings):
        if f.metadata.get("repeatable"):
            values[f.name] = tuple(values[f.name])
    return Settings(**values)


@cli.command("config")
@settings_options
def show_config(**options: Any) -> None:
    """Print the settings `collab serve` would run with, and where each came from.

    Takes the same options, environment and --config file as `collab serve`; secrets
    are masked. The output is TOML, usable as a --config file.

    Example:

        COLLAB_PORT=8080 collab config --config collab.toml
    """
    ctx = click.get_current_context()
    settings = settings_from(options)
    sources = {
        click.core.ParameterSource.COMMANDLINE: "flag",
        click.core.ParameterSource.ENVIRONMENT: "environment",
        click.core.ParameterSource.DEFAULT_MAP: f"file {options.get('config')}",
        click.core.ParameterSource.DEFAULT: "default",
    }
    for f in fields(Settings):
        value = getattr(settings, f.name)
        source = sources.get(ctx.get_parameter_source(f.name), "default")  # type: ignore[arg-type]
        if source == "environment":
            source = f"environment {envvar_of(f.name)}"
        if value is None:
            shown = "# not set"
            click.echo(f"# {flag_of(f.name).removeprefix('--')} {shown} ({source})")
            continue
        if f.metadata.get("secret"):
            shown = '"********"'
        elif isinstance(value, tuple):
            shown = json.dumps(list(value))
        elif isinstance(value, bool | int | float):
            shown = json.dumps(value)
        else:
            shown = json.dumps(str(value))
        click.echo(f"{flag_of(f.name).removeprefix('--')} = {shown}  # {source}")


def _loop_options(settings: Settings) -> dict[str, Any]:
    """uvloop under uvicorn when it is installed (uvicorn's own choice); asyncio's loop else."""
    if settings.server != "uvicorn":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


# -- admin commands: docs, backup, check ----------------------------------------------
#
# Each opens the store the server uses (safe while it runs: see collab.admin), runs
# one function from collab.admin (or one DocumentStore call) in an event loop and
# prints. CollabError becomes a one-line error.


def _db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        envvar="COLLAB_DB",
        default=str(DEFAULTS.db),
        show_envvar=True,
        help="The server's store: a SQLite file (a path or sqlite:///PATH) or a"
        " postgresql://USER@HOST/DB URL.",
    )(command)


def _run(db: str, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open the existing store ``db`` (never creating one), run ``action`` on it in an
    event loop, close it; turn every expected failure into a one-line error."""

    async def main() -> T:
        async with open_store(Settings(db=db), create=False, background=False) as store:
            return await action(store)

    try:
        return anyio.run(main)
    except DatabaseBusyError as e:
        raise click.ClickException(
            f"the database stayed locked for {e.timeout:g} s by another process; try again"
        ) from None
    except DatabaseDamagedError as e:
        raise click.ClickException(
            f"database error: {e.reason}. Run `collab check --db {db}` to see what is damaged;"
            " restore a backup if the file is (collab backup makes them)."
        ) from None
    except DatabaseError as e:
        raise click.ClickException(f"database error: {e.reason}") from None
    except CollabError as e:
        raise click.ClickException(str(e)) from None


def _time_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Parse ``--at``: ISO 8601, @UNIX_SECONDS, now, or a duration back from now (2h)."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    click.echo(line(headers))
    for r in rows:
        click.echo(line(r))


@cli.group()
def docs() -> None:
    """List, export, import, compact, delete and restore stored documents.

    Every command reads and writes the same database as a running server, safely: the
    server notices deletes, imports and restores within seconds.
    """


#: ``docs list --sort`` choices and the store's orders.
_SORTS: dict[str, DocOrder] = {
    "changed": "updated_at",
    "name": "name",
    "bytes": "bytes",
    "updates": "updates",
    "history": "history",
}


@docs.command("list")
@_db_option
@click.option(
    "--sort",
    type=click.Choice(list(_SORTS)),
    default="changed",
    help="Order: last change (newest first), name, or size (largest first).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Show at most this many.")
@click.option("--deleted", is_flag=True, help="Include deleted documents.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def docs_list(db: str, sort: str, limit: int | None, deleted: bool, as_json: bool) -> None:
    """List documents: size of the log a load reads, updates it stands for, last change.

    BYTES and ROWS are what opening the document reads; UPDATES is how many client updates
    they stand for; HISTORY is what the retention window keeps besides.

    Example:

        collab docs list --sort bytes --limit 20
    """
    order = _SORTS[sort]
    found = _run(db, lambda store: store.list_docs(limit, order=order, include_deleted=deleted))
    if as_json:
        click.echo(json.dumps([asdict(d) for d in found], indent=2))
        return
    if not found:
        click.echo("no documents")
        return
    rows = [
        [
            printable(d.name) + (" (deleted)" if d.deleted_at is not None else ""),
            str(d.updates),
            str(d.rows),
            _size(d.bytes),
            _size(d.history_bytes),
            format_time(d.updated_at),
        ]
        for d in found
    ]
    _table(["NAME", "UPDATES", "ROWS", "BYTES", "HISTORY", "CHANGED"], rows, {1, 2, 3, 4})


@docs.command("export")
@_db_option
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["update", "json", "text"]),
    default="update",
    help="update: the binary Yjs update (lossless); json: {root: content}; text: one Y.Text.",
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    help="Root to export, as NAME or NAME:TYPE (text, map, array, xml); repeatable."
    " Default: every root for json, 'content' for text. Types are detected if not given.",
)
@click.option(
    "--at",
    metavar="TIME",
    callback=_time_option,
    help="Export the document as it was then: ISO 8601 (local time unless a zone is"
    " given), @UNIX_SECONDS, or a duration back from now (90m, 2h, 3d).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write here instead of standard output.",
)
def docs_export(
    db: str, name: str, fmt: str, roots: tuple[str, ...], at: float | None, output: str
) -> None:
    """Export a document, now or as it was at a past time.

    Example:

        \b
        collab docs export notes --format text
        collab docs export notes --format json --root content --root meta:map
        collab docs export notes --at "2h ago" -o notes.ydoc
    """

    async def export(store: Store) -> bytes:
        if at is not None or roots:
            update = await admin.export_update(store, name, at)
            if update == EMPTY_UPDATE:
                when = f" at {format_time(at)}" if at is not None else ""
                raise click.ClickException(
                    f"{name!r} had no content{when}: nothing to export"
                    + (" (it did not exist yet, or was empty)" if at is not None else "")
                )
            present = admin.root_names(update)
            missing = [
                r
                for r in roots
                if r.partition(":")[0] not in present
                and r.partition(":")[2] in ("", "text", "map", "array", "xml")
            ]
            if missing:
                raise click.ClickException(
                    f"{name!r} has no root {missing[0].partition(':')[0]!r}; its roots are "
                    + (", ".join(sorted(present)) or "none")
                )
        try:
            if fmt == "update":
                return await admin.export_update(store, name, at)
            if fmt == "json":
                content = await admin.export_content(store, name, roots, at)
                return (json.dumps(content, indent=2, ensure_ascii=False) + "\n").encode()
            if len(roots) > 1:
                raise click.UsageError("--format text exports one --root")
            text = await admin.export_text(store, name, roots[0] if roots else "content", at)
            return (text if text.endswith("\n") else text + "\n").encode()
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--root") from None

    data = _run(db, export)
    if output == "-":
        if fmt == "update" and sys.stdout.isatty():
            raise click.ClickException(
                "refusing to write a binary update to the terminal: use -o FILE or --format text"
            )
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            Path(output).write_bytes(data)
        except OSError as e:
            raise click.ClickException(f"cannot write {output}: {e.strerror or e}") from None
        click.echo(f"wrote {_size(len(data))} to {output}", err=True)


@docs.command("import")
@_db_option
@click.argument("name")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--replace",
    is_flag=True,
    help="Replace the document's content (a new epoch, as delete does) instead of"
    " merging the update into it.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --replace.")
def docs_import(db: str, name: str, file: BinaryIO, replace: bool, yes: bool) -> None:
    """Import a binary Yjs update (as `docs export --format update` writes) into a document.

    Without --replace the update is merged into the document like a client's edit. Bytes
    pycrdt cannot apply are refused and nothing is stored. FILE may be - for stdin.

    Example:

        \b
        collab docs import notes notes.ydoc
        collab docs export notes -o backup.ydoc && collab docs import copy backup.ydoc
    """
    data = file.read()
    if replace and not yes:
        click.confirm(
            f"Replace the whole content of {name!r}? Clients holding it must reload", abort=True
        )
    result = _run(db, lambda store: admin.import_update(store, name, data, replace=replace))
    verb = "replaced" if result.replaced else "merged into"
    click.echo(f"{_size(len(data))} {verb} {name!r} (epoch {result.epoch})")


@docs.command("compact")
@_db_option
@click.argument("name", required=False)
@click.option("--all", "all_docs", is_flag=True, help="Compact every document.")
@click.option(
    "--retention",
    envvar="COLLAB_RETENTION",
    type=click.FloatRange(0),
    default=DEFAULTS.retention,
    show_envvar=True,
    help="Seconds of raw history to keep for point-in-time reads; older is folded"
    " into the base checkpoint.",
)
def docs_compact(db: str, name: str | None, all_docs: bool, retention: float) -> None:
    """Squash documents' logs into one row each and prune history past the retention window.

    The server does this by itself as logs grow; run it after a bulk import or to shrink
    the file at once. Safe while the server runs.

    Example:

        \b
        collab docs compact notes
        collab docs compact --all
    """
    if (name is None) == (not all_docs):
        raise click.UsageError("give a document NAME or --all (not both)")

    async def compact(
        store: Store,
    ) -> tuple[list[str], list[CompactionResult], list[tuple[str, str]]]:
        if name is not None:
            await store.info(name)
        rooms = await admin.all_rooms(store) if all_docs else [name or ""]
        with click.progressbar(length=len(rooms), label="compacting", file=sys.stderr) as bar:
            results, failures = await admin.compact(
                store, rooms, retention=retention, progress=bar.update
            )
        return rooms, results, failures

    rooms, results, failures = _run(db, compact)
    before = sum(r.bytes_before for r in results)
    after = sum(r.bytes_after for r in results)
    click.echo(
        f"compacted {len(results)} of {len(rooms)} documents: "
        f"{_size(before)} -> {_size(after)} in their logs"
    )
    for room, error in failures:
        click.echo(f"cannot compact {room!r}: {error} (see `collab check`)", err=True)
    if failures:
        raise SystemExit(1)


@docs.command("delete")
@_db_option
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def docs_delete(db: str, name: str, yes: bool) -> None:
    """Delete a document and its history.

    Connected clients are disconnected with code 4409 and told to reload; a client that
    still holds the old content cannot bring it back.

    Example:

        collab docs delete old-notes --yes
    """

    async def delete(store: Store) -> int:
        await store.info(name)
        if not yes:
            click.confirm(f"Delete {name!r} and all its history?", abort=True)
        return await admin.delete(store, name)

    epoch = _run(db, delete)
    click.echo(f"deleted {name!r} (now at epoch {epoch})")


@docs.command("history")
@_db_option
@click.argument("name")
@click.option(
    "--gap",
    type=click.FloatRange(0),
    default=300.0,
    help="Seconds without updates that separate two editing sessions.",
)
def docs_history(db: str, name: str, gap: float) -> None:
    """List the points a document can be exported or restored at, with sizes.

    Each line is an editing session (updates with no pause longer than --gap); any time
    from the first line on works with --at, to the update.

    Example:

        \b
        collab docs history notes
        collab docs restore notes --at "2026-03-01 14:30"
    """
    read = _run(db, lambda store: store.history(name))
    if read.history_from is not None:
        click.echo(
            f"readable from {format_time(read.history_from)}"
            " (older history was folded away by the retention window)"
        )
    else:
        click.echo("readable at any time since the document was created")
    if read.base is not None:
        at, size, count = read.base
        click.echo(f"checkpoint  {format_time(at)}  {count} updates  {_size(size)}")
    rows = [
        [format_time(s.start), format_time(s.end), str(s.updates), _size(s.bytes)]
        for s in sessions(read.raw, gap)
    ]
    if rows:
        _table(["FROM", "TO", "UPDATES", "BYTES"], rows, {2, 3})
    if read.compacted is not None:
        at, size, count = read.compacted
        click.echo(
            f"(a load reads one compacted row for the {count} updates up to"
            f" {format_time(at)}, {_size(size)}, plus the updates after it)"
        )


@docs.command("restore")
@_db_option
@click.argument("name")
@click.option(
    "--at",
    metavar="TIME",
    callback=_time_option,
    required=True,
    help="The time to bring back: ISO 8601 (local time unless a zone is given),"
    " @UNIX_SECONDS, or a duration back from now (90m, 2h, 3d).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def docs_restore(db: str, name: str, at: float, yes: bool) -> None:
    """Bring back a document's content from a past time, as a new edit on top.

    Nothing is rewritten: connected clients see the restore as an ordinary change, and it
    can itself be undone by restoring to a time just before it.

    Example:

        collab docs restore notes --at "1h ago"
    """
    if not yes:
        click.confirm(f"Restore {name!r} to its content at {format_time(at)}?", abort=True)
    result = _run(db, lambda store: admin.restore(store, name, at))
    roots = ", ".join(f"{root}:{kind}" for root, kind in result.roots) or "none"
    if result.update is None:
        click.echo(f"{name!r} already has its content of {format_time(at)} (roots: {roots})")
    else:
        click.echo(
            f"restored {name!r} to {format_time(at)} with an edit of"
            f" {_size(len(result.update))} (roots: {roots})"
        )


@cli.command()
@_db_option
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def backup(db: str, path: str, force: bool) -> None:
    """Copy the database to PATH, consistently, while the server keeps writing.

    Uses SQLite's online backup inside one read transaction, so the copy is a single
    moment's state; the server's commits do not wait for it. From PostgreSQL, PATH is a
    SQLite file holding a copy of one snapshot (which `collab serve --db PATH` can run on).

    Example:

        collab backup backups/collab-$(date +%F).db
    """
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise click.ClickException(f"the folder {folder} does not exist: create it first")
    with click.progressbar(length=100, label="backing up", file=sys.stderr) as bar:
        done = 0

        def progress(copied: int, total: int) -> None:
            nonlocal done
            now = copied * 100 // max(total, 1)
            bar.update(now - done)
            done = now

        size = _run(db, lambda store: admin.backup(store, path, force=force, progress=progress))
    click.echo(f"backed up {db} to {path} ({_size(size)})")


@cli.command()
@_db_option
def check(db: str) -> None:
    """Replay every document and report any stored update that cannot be applied.

    Exits with status 1 if any document fails (its name and the failing row are printed).

    Example:

        collab check --db data/collab.db
    """

    async def check_all(store: Store) -> tuple[int, list[admin.Problem]]:
        try:
            count = len(await admin.all_rooms(store))
        except StoreError:
            count = 0  # a damaged file: admin.check reports what it can read
        with click.progressbar(length=count, label="checking", file=sys.stderr) as bar:
            return await admin.check(store, progress=bar.update)

    checked, problems = _run(db, check_all)
    for problem in problems:
        click.echo(f"FAIL {problem.room!r} ({problem.where}): {problem.error}")
    failed = len({p.room for p in problems})
    noun = "document" if checked == 1 else "documents"
    click.echo(f"checked {checked} {noun}: {failed or 'none'} failed")
    if problems:
        raise SystemExit(1)


# -- clients of a running server: get, put, watch -------------------------------------
#
# Each runs one function of collab.remote (over collab.client) against a server's
# websocket URL; an unreachable server or a refused name is a one-line error.


def _remote(action: Callable[[], Awaitable[T]]) -> T:
    try:
        return anyio.run(action)
    except CollabError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--root") from None


@cli.command("get")
@click.argument("url")
@click.option(
    "--root",
    default=None,
    help="Root to print, as NAME or NAME:TYPE (text, map, array, xml): a text as it is,"
    " a map or array as JSON. Default: the 'content' text, or JSON of every root.",
)
def get(url: str, root: str | None) -> None:
    """Print a document of a running server.

    Example:

        \b
        collab get ws://127.0.0.1:1234/notes/plan
        collab get ws://127.0.0.1:1234/notes/plan --root meta
    """
    content = _remote(lambda: remote.get_content(url, root))
    click.echo(content, nl=not content.endswith("\n"))


@cli.command("put")
@click.argument("url")
@click.option("--root", default="content", help="The text root to replace.")
def put(url: str, root: str) -> None:
    """Replace a text of a running server's document with standard input.

    Only what differs is deleted and inserted (a minimal diff, one transaction), so people
    editing at the same moment keep their cursors and their own edits. Returns once the
    server has the edit on disk.

    Example:

        \b
        collab put ws://127.0.0.1:1234/notes/plan --root content < plan.md
    """
    new = sys.stdin.read()
    deleted, inserted = _remote(lambda: remote.put_text(url, root, new))
    click.echo(f"saved: {deleted} characters deleted, {inserted} inserted", err=True)


@cli.command("watch")
@click.argument("url")
@click.option(
    "--root",
    "roots",
    multiple=True,
    help="Root to follow, as NAME or NAME:TYPE (text, map, array); repeatable."
    " Default: every root the document has ('content' if none).",
)
def watch(url: str, roots: tuple[str, ...]) -> None:
    """Print a document's roots, then one JSON line per change as it happens.

    Reconnects on its own (connection changes go to standard error); stop with Ctrl-C.

    Example:

        \b
        collab watch ws://127.0.0.1:1234/notes/plan
        {"root": "content", "value": "hello"}
        {"root": "content", "delta": [{"retain": 5}, {"insert": " world"}]}
    """

    def emit(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    try:
        _remote(lambda: remote.watch(url, roots, emit, lambda line: click.echo(line, err=True)))
    except KeyboardInterrupt:
        pass


@cli.group()
def token() -> None:
    """Issue access tokens (JWTs) for `collab serve --jwt-secret`.

    A token names the documents it opens (exact names, or prefixes ending in *) and the
    access it gives them: read (see and follow the document) or write (edit it too).
    """


def _duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None or value.lower() == "never":
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


@token.command("issue")
@click.option(
    "--doc",
    "docs_",
    multiple=True,
    required=True,
    help="A document name or prefix pattern (notes/*); repeat for several.",
)
@click.option(
    "--access",
    type=click.Choice(["read", "write"]),
    default="write",
    help="What the token allows on those documents.",
)
@click.option(
    "--ttl",
    default="1h",
    callback=_duration_option,
    help="How long the token is valid: 90s, 15m, 1h, 7d, or 'never'.",
)
@click.option("--sub", "subject", default=None, help="Who the token is for (its sub claim).")
@click.option("--aud", "audience", default=None, help="Its aud claim (see serve --jwt-audience).")
@click.option("--iss", "issuer", default=None, help="Its iss claim (see serve --jwt-issuer).")
@click.option(
    "--jwt-secret",
    envvar="COLLAB_JWT_SECRET",
    required=True,
    show_envvar=True,
    help="The HS256 secret the server verifies with (at least 32 bytes).",
)
def token_issue(
    docs_: tuple[str, ...],
    access: str,
    ttl: float | None,
    subject: str | None,
    audience: str | None,
    issuer: str | None,
    jwt_secret: str,
) -> None:
    """Print a token for the configured secret.

    Prefer COLLAB_JWT_SECRET to --jwt-secret: a flag's value shows in the process list.

    Example:

        COLLAB_JWT_SECRET=... collab token issue --doc 'notes/*' --access write --ttl 1h
    """
    try:
        issued = issue_token(
            jwt_secret,
            list(docs_),
            Access.parse(access),
            ttl=ttl,
            subject=subject,
            audience=audience,
            issuer=issuer,
        )
    except (ConfigError, TokenError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(issued)


def main() -> None:
    cli(prog_name="collab")


__all__ = ["cli", "main"]
