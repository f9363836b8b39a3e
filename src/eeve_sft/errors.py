"""One error type for every bad input a user can give (recipe, flag, path, data row), and how CLIs report it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

import yaml

from .quiet import quiet_libraries


class UserError(Exception):
    """A mistake in what the user gave us. CLIs print it as one line and exit with status 2."""


def one_line(err: BaseException) -> str:
    """An exception's whole message joined into one line (libraries often wrap theirs over several), or its type
    name when it has none: the cause in a one-line error, never cut short."""
    return " ".join(str(err).split()) or type(err).__name__


def yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what a YAML parse error is, as `` (line L, column C): problem``."""
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"{where}: {getattr(err, 'problem', None) or one_line(err)}"


def run_cli(main: Callable[[], object]) -> None:
    """Run `main` as a CLI's entry: libraries' noise filtered (:mod:`eeve_sft.quiet`), and a UserError becomes
    ``error: <message>`` on stderr and exit status 2, with no traceback."""
    quiet_libraries()
    try:
        main()
    except UserError as err:
        message = " ".join(str(err).split())  # always one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def one_line_usage_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` report a bad flag as a UserError: argparse prints its usage over several lines, and every CLI
    here gives one error line (through :func:`run_cli`)."""

    def fail(message: str) -> NoReturn:
        raise UserError(message)

    parser.error = fail
    return parser
