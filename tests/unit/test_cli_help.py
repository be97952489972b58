"""Every `runhub` command has its --help, and rotate-secret's says what revoking breaks. (The commands
at work against a database: tests/db/test_loader.py, tests/db/test_unsubscribe_keys.py and others.)"""
from __future__ import annotations

from click.testing import CliRunner

from runhub_loader.cli import main as cli


def _command_paths(group, path=()):
    """Every command of the CLI, as the words that name it (read from click, so new ones count)."""
    yield list(path)
    for name, command in getattr(group, "commands", {}).items():
        yield from _command_paths(command, (*path, name))


def test_every_command_has_help():
    runner = CliRunner()
    commands = list(_command_paths(cli))
    assert ["rotate-secret"] in commands and ["db", "destroy"] in commands
    for command in commands:
        result = runner.invoke(cli, command + ["--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (command, result.output)


def test_the_command_explains_what_revoking_breaks():
    result = CliRunner().invoke(cli, ["rotate-secret", "--help"])
    assert result.exit_code == 0 and "--revoke-previous" in result.output and "STOP WORKING" in result.output


def test_the_sender_says_how_to_run_several_processes_and_what_they_share():
    result = CliRunner().invoke(cli, ["sender", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "--processes" in text
    for said in ("[default: 1;", "as many as the host has cores", "shared among them",
                 "the first alone executes runs", "A process that dies is restarted", "SIGTERM stops them all"):
        assert said in text, said
