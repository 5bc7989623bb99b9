"""The project's exception types: one base the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class TcError(Exception):
    """Bad input or environment the user can fix; the message says what and where."""


class DataError(TcError):
    """A dataset problem: unknown name, missing or corrupt file, malformed record."""


class ConfigError(TcError):
    """An invalid run configuration, params file or CLI option."""


def first_line(err: BaseException) -> str:
    """The first informative line of an exception's message (not blank, not a rule of dashes), else its type."""
    for line in str(err).strip().splitlines():
        if line.strip() and not set(line.strip()) <= set("-"):
            return line.strip()[:500]
    return err.__class__.__name__
