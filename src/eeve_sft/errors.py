"""One error type for every bad input a user can give (recipe, flag, path, data row), and how CLIs report it."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake in what the user gave us. CLIs print it as one line and exit with status 2."""


def run_cli(main: Callable[[], object]) -> None:
    """Run `main`; a UserError becomes ``error: <message>`` on stderr and exit status 2, with no traceback."""
    try:
        main()
    except UserError as err:
        message = " ".join(str(err).split())  # always one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
