"""imagegen.cli.COMMANDS is the one list of subcommands: the parser, --help and completion come from it, and a
command whose optional module is missing stays listed and explains itself (exit 2) instead of vanishing."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from imagegen import cli
from imagegen.completion import command_tree

from .conftest import ROOT


def _names(sub: argparse._SubParsersAction) -> list[str]:  # type: ignore[type-arg]
    return list(sub.choices)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_each_entry_adds_exactly_the_commands_it_names() -> None:
    for command in cli.COMMANDS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        cli.add_command(sub, command)
        assert _names(sub) == list(command.names), command.module


def test_parser_help_and_completion_come_from_the_registry() -> None:
    listed = [name for command in cli.COMMANDS for name in command.names]
    assert len(listed) == len(set(listed))
    parser = cli.build_parser()
    assert _names(_subparsers(parser)) == listed
    assert command_tree(parser)[""][0] == sorted(listed)
    usage = parser.format_help()
    assert all(name in usage for name in listed)


def test_extras_named_in_the_registry_exist_in_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for command in cli.COMMANDS:
        assert command.extra is None or command.extra in extras, command


@pytest.fixture
def fake_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> cli.Command:
    (tmp_path / "imagegen_fake_command.py").write_text("import no_such_dependency_xyz.sub  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    command = cli.Command(("fake", "fake2"), "imagegen_fake_command", extra="vm")
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, command))
    return command


def test_missing_optional_module_keeps_the_command_listed(fake_command: cli.Command) -> None:
    parser = cli.build_parser()
    assert {"fake", "fake2"} <= set(_subparsers(parser).choices)
    text = " ".join(parser.format_help().split())
    assert "fake (unavailable: needs the Python module 'no_such_dependency_xyz'" in text
    assert "fake" in command_tree(parser)[""][0]


@pytest.mark.parametrize("argv", [["fake"], ["fake", "build", "--spec", "x", "--force"], ["fake2", "--json"]])
def test_running_an_unavailable_command_names_the_module_and_the_fix(
        fake_command: cli.Command, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imagegen: {argv[0]}: needs the Python module 'no_such_dependency_xyz'")
    assert "pip install 'imagegen[vm]'" in err


def test_unavailable_command_without_extra_says_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imagegen_fake_plain.py").write_text("import no_such_dependency_xyz  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, cli.Command(("plain",), "imagegen_fake_plain")))
    assert cli.main(["plain"]) == 2
    assert "pip install imagegen" in capsys.readouterr().err


def test_a_missing_imagegen_module_is_a_bug_not_an_unavailable_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, cli.Command(("gone",), "imagegen.no_such_module")))
    with pytest.raises(ModuleNotFoundError, match="imagegen.no_such_module"):
        cli.build_parser()


def test_available_commands_still_reject_unknown_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["image", "build", "--bogus"])
    assert exit_.value.code == 2
    assert "usage: imagegen image build" in capsys.readouterr().err
