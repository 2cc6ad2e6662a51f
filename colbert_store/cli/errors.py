"""How the command line names itself and reports user errors."""

from __future__ import annotations

PROG = "colbert-store"
EXIT_USAGE = 2
"""Exit status of a user error (the same as argparse's for a bad argument)."""


class CliError(Exception):
    """A user error: reported as one line on stderr, no traceback."""
