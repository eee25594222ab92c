"""The CLI's one error line: what is wrong and what to do, exit status 2, never a traceback."""

from __future__ import annotations

import click


class CliError(click.ClickException):
    """A person's mistake (a name, a file, a missing certificate): "Error: …" on stderr, exit status 2."""

    exit_code = 2
