"""The `imgrun` command line."""

from runner.cli.commands import cli, main

__all__ = ["cli", "main"]
