"""The project's exception types: one base the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class TcError(Exception):
    """Bad input or environment the user can fix; the message says what and where."""


class DataError(TcError):
    """A dataset problem: unknown name, missing or corrupt file, malformed record."""


class ConfigError(TcError):
    """An invalid run configuration, params file or CLI option."""
