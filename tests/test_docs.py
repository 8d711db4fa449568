"""Every CLI command has help with an example, and every command is in the README."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from collab.cli import cli
from tests.conftest import ROOT


def commands(group: click.Group, prefix: str = "collab") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += commands(command, path)
        else:
            found.append((path, command))
    return found


ALL = commands(cli)


def test_there_are_commands() -> None:
    assert {path for path, _ in ALL} >= {"collab serve", "collab docs list", "collab check"}


@pytest.mark.parametrize(("path", "command"), ALL, ids=[p for p, _ in ALL])
def test_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*path.split()[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert command.help and "Example" in command.help, f"{path} needs a docstring with an example"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{path} {param.opts[0]} has no help"


@pytest.mark.parametrize(("path", "command"), ALL, ids=[p for p, _ in ALL])
def test_command_is_in_the_readme(path: str, command: click.Command) -> None:
    assert f"`{path}" in (ROOT / "README.md").read_text(), f"README.md does not mention `{path}`"


def test_serve_options_are_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    serve = dict(ALL)["collab serve"]
    for param in serve.params:
        if isinstance(param, click.Option) and param.opts[0] != "--help":
            assert f"`{param.opts[0]}`" in readme, f"README.md does not document {param.opts[0]}"
