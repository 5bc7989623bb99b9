"""A method's options, typed: name, kind, default, help, allowed values. The registry (tc_lib.methods)
lists them per method; RunConfig's option fields and their validation, the training notebook's
`method_options` documentation, the memory CLI's flags and the report's method-settings column are all
generated from that list, so a new option (or a new method with options) is written once."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError

KINDS = {"int": "int", "float": "float", "str": "str", "modules": "tuple[str, ...] | None"}


@dataclass(frozen=True)
class Option:
    name: str  # the RunConfig field (and params-file key)
    kind: str  # int | float | str | modules (a list of module names; None: the library's default)
    default: Any
    help: str  # one line, for the notebook, the CLI and the README
    short: str = ""  # how the report's method-settings column names it (default: the name)
    choices: tuple[str, ...] = ()  # for kind str
    low: float | None = None  # numbers: value >= low
    below: float | None = None  # numbers: value < below
    flag: str = ""  # the memory CLI flag (default: --name-with-dashes)
    added_later: bool = False  # added after records existed: left out of run ids and arms at its default

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def annotation(self) -> str:
        return KINDS[self.kind]

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return self.short or self.name

    def expected(self) -> str:
        """What a valid value is, in words (the error message's 'expected ...')."""
        if self.kind == "modules":
            return "null or a non-empty list of module names"
        if self.choices:
            return " | ".join(self.choices)
        if self.kind == "str":
            return "a non-empty string"
        noun = "an integer" if self.kind == "int" else "a number"
        if self.low is not None and self.below is not None:
            return f"{noun} in [{self.low:g}, {self.below:g})"
        return f"{noun} >= {self.low:g}" if self.low is not None else noun

    def valid(self, value: Any) -> bool:
        if self.kind == "modules":
            return value is None or (isinstance(value, (list, tuple)) and len(value) > 0
                                     and all(isinstance(t, str) and t for t in value))
        if self.kind == "str":
            return isinstance(value, str) and value != "" and (not self.choices or value in self.choices)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "int":
            number = number and isinstance(value, int)
        return (number and (self.low is None or value >= self.low)
                and (self.below is None or value < self.below))


def given_options(given: Any, known: Mapping[str, Option], *, beside: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A dict of option values (the notebook's `method_options`), checked: a dict, option names only
    (a misspelled one named with the closest), none also given `beside` it (as a variable of its own)."""
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: expected a dict of method options, got {given!r:.60}")
    unknown = sorted(str(k) for k in given if k not in known)
    if unknown:
        hints = [f"{k} -> {c[0]}" for k in unknown if (c := difflib.get_close_matches(k, list(known), 1))]
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}"
                          + (f" (did you mean {', '.join(hints)}?)" if hints else "") + f"; options: {', '.join(known)}")
    twice = sorted(set(given) & set(beside))
    if twice:
        raise ConfigError(f"{where}: {', '.join(twice)} also set as a variable of its own; set it once")
    return dict(given)
