"""The admin commands through click's CliRunner: arguments, output, errors without tracebacks."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from pycrdt import Doc, Map, Text

from collab.auth import Access, TokenVerifier
from collab.cli import cli
from collab.storage.sqlite import append_updates, connect
from collab.updates import doc_from
from tests.edits import keystrokes


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database with 'notes' (text + map, typed an hour ago and now) and 'empty'."""
    path = tmp_path / "collab.db"
    db = connect(path)
    doc: Doc[Any] = Doc()
    hour_ago = time.time() - 3600
    append_updates(db, [("notes", u, hour_ago, None) for u in keystrokes("draft", doc)])
    before = doc.get_state()
    doc.get("meta", type=Map)["title"] = "Notes"
    append_updates(db, [("notes", doc.get_update(before), hour_ago, None)])
    append_updates(db, [("notes", u, time.time(), None) for u in keystrokes(" v2", doc)])
    append_updates(db, [("empty", b"\x00\x00", time.time(), None)])
    db.close()
    return path


def run(db_path: Path | str, *args: str, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(cli, [*args, "--db", str(db_path)], input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_every_admin_command_has_help_with_an_example() -> None:
    docs = cli.commands["docs"]
    assert isinstance(docs, click.Group)
    commands = [cli.commands["backup"], cli.commands["check"], *docs.commands.values()]
    assert {c.name for c in docs.commands.values()} >= {
        "list",
        "export",
        "import",
        "compact",
        "delete",
        "history",
        "restore",
    }
    for command in commands:
        assert command.help and "Example:" in command.help, command.name
        assert "--db" in CliRunner().invoke(command, ["--help"]).output


def test_a_missing_database_is_a_one_line_error(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.db", "docs", "list")
    assert result.exit_code == 1
    assert result.output == f"Error: no database at {str(tmp_path / 'nope.db')!r}\n"
    assert not (tmp_path / "nope.db").exists()  # never created by an admin command


def test_the_database_comes_from_collab_db(db_path: Path) -> None:
    result = CliRunner().invoke(cli, ["docs", "list"], env={"COLLAB_DB": str(db_path)})
    assert "notes" in ok(result)


def test_list_as_table_and_json(db_path: Path) -> None:
    lines = ok(run(db_path, "docs", "list", "--sort", "name")).splitlines()
    assert lines[0].split() == ["NAME", "UPDATES", "ROWS", "BYTES", "HISTORY", "CHANGED"]
    assert [line.split()[0] for line in lines[1:]] == ["empty", "notes"]
    docs = json.loads(ok(run(db_path, "docs", "list", "--json", "--sort", "updates")))
    assert [(d["name"], d["updates"]) for d in docs] == [("notes", 9), ("empty", 1)]
    assert len(json.loads(ok(run(db_path, "docs", "list", "--json", "--limit", "1")))) == 1


def test_export_text_json_and_update(db_path: Path, tmp_path: Path) -> None:
    assert ok(run(db_path, "docs", "export", "notes", "--format", "text")) == "draft v2\n"
    assert json.loads(ok(run(db_path, "docs", "export", "notes", "--format", "json"))) == {
        "content": "draft v2",
        "meta": {"title": "Notes"},
    }
    assert json.loads(
        ok(run(db_path, "docs", "export", "notes", "--format", "json", "--root", "meta:map"))
    ) == {"meta": {"title": "Notes"}}
    out = tmp_path / "notes.ydoc"
    ok(run(db_path, "docs", "export", "notes", "-o", str(out)))
    assert str(doc_from([out.read_bytes()]).get("content", type=Text)) == "draft v2"
    stdout = CliRunner().invoke(cli, ["docs", "export", "notes", "--db", str(db_path)])
    assert stdout.stdout_bytes == out.read_bytes()


def test_export_at_a_past_time(db_path: Path) -> None:
    old = ok(run(db_path, "docs", "export", "notes", "--format", "text", "--at", "30m"))
    assert old == "draft\n"
    before = run(db_path, "docs", "export", "notes", "--format", "text", "--at", "2h")
    assert before.exit_code == 1 and "had no content at" in before.output  # not silence


def test_export_errors(db_path: Path) -> None:
    result = run(db_path, "docs", "export", "notes", "--at", "last tuesday")
    assert result.exit_code == 2 and "not a time" in result.output
    result = run(db_path, "docs", "export", "missing", "--format", "text")
    assert result.exit_code == 1 and "no document named 'missing'" in result.output
    result = run(db_path, "docs", "export", "notes", "--format", "text", "--root", "meta")
    assert result.exit_code == 1 and "is a map, not text" in result.output
    result = run(db_path, "docs", "export", "notes", "--format", "json", "--root", "x:tree")
    assert result.exit_code == 2 and "unknown root type" in result.output


def test_import_merges_and_refuses_garbage(db_path: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.ydoc"
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, "imported")
    source.write_bytes(doc.get_update())
    assert "merged into 'fresh'" in ok(run(db_path, "docs", "import", "fresh", str(source)))
    assert ok(run(db_path, "docs", "export", "fresh", "--format", "text")) == "imported\n"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x01\x05\xff\xff\xff")
    result = run(db_path, "docs", "import", "other", str(garbage))
    assert result.exit_code == 1 and "not a Yjs update" in result.output
    assert "Traceback" not in result.output
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT count(*) FROM documents WHERE name = 'other'").fetchone() == (0,)
    # stdin works too
    assert "merged" in ok(run(db_path, "docs", "import", "piped", "-", input=doc.get_update()))


def test_import_replace_asks_first(db_path: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.ydoc"
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, "replacement")
    source.write_bytes(doc.get_update())
    result = run(db_path, "docs", "import", "notes", str(source), "--replace", input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    output = ok(run(db_path, "docs", "import", "notes", str(source), "--replace", "--yes"))
    assert "replaced 'notes' (epoch 1)" in output
    assert ok(run(db_path, "docs", "export", "notes", "--format", "text")) == "replacement\n"


def test_compact_one_or_all(db_path: Path) -> None:
    result = run(db_path, "docs", "compact")
    assert result.exit_code == 2 and "NAME or --all" in result.output
    assert "compacted 1 of 1" in ok(run(db_path, "docs", "compact", "notes"))
    assert "compacted 0 of 2" in ok(run(db_path, "docs", "compact", "--all"))
    docs = json.loads(ok(run(db_path, "docs", "list", "--json", "--sort", "name")))
    assert [(d["name"], d["rows"], d["updates"]) for d in docs] == [
        ("empty", 1, 1),
        ("notes", 1, 9),
    ]
    assert ok(run(db_path, "docs", "export", "notes", "--format", "text")) == "draft v2\n"
    result = run(db_path, "docs", "compact", "missing")
    assert result.exit_code == 1 and "no document named" in result.output


def test_delete_asks_unless_yes(db_path: Path) -> None:
    result = run(db_path, "docs", "delete", "notes", input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert "deleted 'notes' (now at epoch 1)" in ok(run(db_path, "docs", "delete", "notes", "-y"))
    result = run(db_path, "docs", "export", "notes", "--format", "text")
    assert result.exit_code == 1 and "was deleted at" in result.output
    assert "notes" not in ok(run(db_path, "docs", "list"))
    assert "notes (deleted)" in ok(run(db_path, "docs", "list", "--deleted"))


def test_history_and_restore(db_path: Path) -> None:
    ok(run(db_path, "docs", "compact", "notes"))
    output = ok(run(db_path, "docs", "history", "notes"))
    assert "readable at any time" in output
    assert len([line for line in output.splitlines() if line[:2] == "20"]) == 2  # two sessions
    restored = ok(run(db_path, "docs", "restore", "notes", "--at", "30m", "--yes"))
    assert "restored 'notes'" in restored and "content:text" in restored
    assert ok(run(db_path, "docs", "export", "notes", "--format", "text")) == "draft\n"
    again = ok(run(db_path, "docs", "restore", "notes", "--at", "now", "--yes"))
    assert "already has its content" in again
    result = run(db_path, "docs", "restore", "notes")
    assert result.exit_code == 2 and "--at" in result.output


def test_backup_and_check(db_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    assert "backed up" in ok(run(db_path, "backup", str(target)))
    result = run(db_path, "backup", str(target))
    assert result.exit_code == 1 and "--force" in result.output
    ok(run(db_path, "backup", str(target), "--force"))
    assert "checked 2 documents: none failed" in ok(run(target, "check"))
    with sqlite3.connect(target) as raw:
        raw.execute("UPDATE updates SET data = x'0105ffffff' WHERE seq = 2")
    result = run(target, "check")
    assert result.exit_code == 1
    assert "FAIL 'notes' (updates seq 2)" in result.output
    assert "checked 2 documents: 1 failed" in result.output


def test_a_damaged_file_is_a_one_line_error_and_check_reports_it(
    db_path: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.db"
    with sqlite3.connect(db_path) as raw:
        raw.execute("VACUUM INTO ?", [str(damaged)])  # one self-contained file, no WAL
        (root,) = raw.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'updates'")
    data = bytearray(damaged.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    start = (root[0] - 1) * size
    data[start : start + size] = b"\xa5" * size  # the updates table's root page
    damaged.write_bytes(bytes(data))
    result = run(damaged, "docs", "list")
    assert result.exit_code == 1
    assert result.output.startswith("Error: database error: "), result.output
    assert "collab check" in result.output
    assert isinstance(result.exception, SystemExit)  # not a traceback
    result = run(damaged, "check")
    assert result.exit_code == 1
    assert "FAIL '-' (database)" in result.output
    assert isinstance(result.exception, SystemExit)


def test_export_to_a_folder_that_does_not_exist_is_a_one_line_error(
    db_path: Path, tmp_path: Path
) -> None:
    result = run(db_path, "docs", "export", "notes", "-o", str(tmp_path / "no" / "such" / "x"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot write ")
    assert isinstance(result.exception, SystemExit)


def test_a_document_with_a_damaged_row_can_be_replaced_or_deleted(
    db_path: Path, tmp_path: Path
) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE updates SET data = x'0105ffffff' WHERE seq = 2")
    result = run(db_path, "docs", "export", "notes", "--format", "text")
    assert result.exit_code == 1
    assert "cannot be read" in result.output and "collab check" in result.output
    good: Doc = Doc()
    good.get("content", type=Text).insert(0, "from the backup")
    backup = tmp_path / "backup.ydoc"
    backup.write_bytes(good.get_update())
    ok(run(db_path, "docs", "import", "notes", str(backup), "--replace", "--yes"))
    assert ok(run(db_path, "docs", "export", "notes", "--format", "text")) == "from the backup\n"
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE updates SET data = x'0105ffffff'")
    ok(run(db_path, "docs", "delete", "notes", "--yes"))
    assert "notes" not in ok(run(db_path, "docs", "list"))


def test_the_database_can_be_given_as_a_sqlite_url(db_path: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{db_path}"  # an absolute path: four slashes
    assert "notes" in ok(run(url, "docs", "list"))
    result = run("mysql://x/y", "docs", "list")
    assert result.exit_code == 1 and "unknown store URL scheme 'mysql'" in result.output
    result = run("postgres://nobody@no-such-host.invalid/y", "docs", "list")
    assert result.exit_code == 1 and "cannot open database" in result.output
    assert "no-such-host.invalid" in result.output and "Traceback" not in result.output


def test_token_issue_prints_a_token_the_server_would_accept() -> None:
    secret = "k" * 32
    result = CliRunner().invoke(
        cli,
        ["token", "issue", "--doc", "notes/*", "--doc", "handbook", "--access", "read"],
        env={"COLLAB_JWT_SECRET": secret},
    )
    assert result.exit_code == 0, result.output
    grants = TokenVerifier.from_secret(secret).verify(result.output.strip())
    assert grants.access_for("notes/plan") is Access.READ
    assert grants.access_for("handbook") is Access.READ
    assert grants.access_for("other") is None
    assert grants.expires_at is not None and 3500 < grants.expires_at - time.time() <= 3600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--doc", "a", "--jwt-secret", "short"], "at least 32"),
        (["--doc", "a", "--jwt-secret", "k" * 32, "--ttl", "5x"], "not a duration"),
        (["--doc", "a*b", "--jwt-secret", "k" * 32], "bad document pattern"),
        (["--jwt-secret", "k" * 32], "Missing option '--doc'"),
    ],
)
def test_token_issue_refuses_bad_input_in_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["token", "issue", *args], env={"COLLAB_JWT_SECRET": None})
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


# -- rough edges found on a fresh clone (issue 14) -------------------------------------


def test_export_of_nothing_says_so_and_fails(db_path: Path) -> None:
    before_it_existed = run(db_path, "docs", "export", "notes", "--at", "@0", "--format", "text")
    assert before_it_existed.exit_code == 1
    assert "had no content at" in before_it_existed.output
    no_root = run(db_path, "docs", "export", "notes", "--format", "json", "--root", "nope")
    assert no_root.exit_code == 1
    assert "has no root 'nope'; its roots are content, meta" in no_root.output


def test_text_export_ends_with_a_newline(db_path: Path) -> None:
    assert ok(run(db_path, "docs", "export", "notes", "--format", "text")) == "draft v2\n"


def test_backup_into_a_missing_folder_names_the_folder(db_path: Path, tmp_path: Path) -> None:
    result = run(db_path, "backup", str(tmp_path / "nowhere" / "copy.db"))
    assert result.exit_code == 1
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in result.output


def test_check_counts_one_document_in_the_singular(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    db = connect(path)
    append_updates(db, [("only", b"\x00\x00", time.time(), None)])
    db.close()
    assert "checked 1 document: none failed" in ok(run(path, "check"))
