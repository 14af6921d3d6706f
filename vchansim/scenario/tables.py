"""Reading TOML tables with errors that point at the key.

Every reader of a scenario file -- the loader, each fault kind, each expectation kind --
reads its keys through a :class:`Table`, so that a bad value is refused with the file,
the dotted key and the value in one line, and a key nobody read (a typo) is refused too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from ..errors import ConfigError
from .streams import SizeSpec


class ScenarioError(ConfigError):
    """A scenario is malformed; the message names the file, the key and the value."""


def show(value: Any) -> str:
    """A bad value as an error message quotes it: its type and its repr."""
    return f"{type(value).__name__} {value!r}"


class Table:
    """One TOML table being read: typed getters that remember which keys were used."""

    def __init__(self, source: str, where: str, data: Any) -> None:
        self.source = source
        self.where = where
        if not isinstance(data, dict):
            self.fail_self(f"must be a table, not {show(data)}")
        self.data: dict[str, Any] = data
        self._used: set[str] = set()

    def key_name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> NoReturn:
        raise ScenarioError(f"{self.source}: {self.key_name(key)}: {message}")

    def fail_self(self, message: str) -> NoReturn:
        raise ScenarioError(f"{self.source}: {self.where or 'top level'}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self._used.add(key)
        return self.data.get(key, default)

    def integer(self, key: str, default: int, lo: int = 0, hi: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, not {show(value)}")
        return int(self._in_range(key, value, lo, hi))

    def number(self, key: str, default: float, lo: float = 0.0, hi: float | None = None) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, not {show(value)}")
        return float(self._in_range(key, value, lo, hi))

    def _in_range(self, key: str, value: Any, lo: Any, hi: Any) -> Any:
        if value < lo:
            self.fail(key, f"{value} is below the minimum {lo}")
        if hi is not None and value > hi:
            self.fail(key, f"{value} is above the maximum {hi}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {show(value)}")
        return value

    def text(self, key: str, default: str | None, choices: Iterable[str] | None = None) -> str:
        value = self.raw(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {show(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value

    def size(self, key: str, default: SizeSpec, hi: int) -> SizeSpec:
        """A size: an integer, or ``[low, high]`` to draw from that range."""
        value = self.raw(key, None)
        if value is None:
            return default
        if isinstance(value, list) and len(value) == 2:
            low, high = value
        else:
            low = high = value
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, int):
                self.fail(key, f"must be an integer or [low, high], not {show(value)}")
            self._in_range(key, bound, 1, hi)
        if low > high:
            self.fail(key, f"range [{low}, {high}] is empty (low > high)")
        return SizeSpec(low, high)

    def endpoint(self, names: tuple[str, ...], key: str = "endpoint") -> str:
        """A key naming one of the scenario's endpoints."""
        return self.text(key, None, names)

    def table(self, key: str) -> Table:
        return Table(self.source, self.key_name(key), self.raw(key, {}))

    def array_of_tables(self, key: str) -> list[Table]:
        value = self.raw(key, [])
        if not isinstance(value, list):
            self.fail(key, f"must be an array of tables ([[{key}]]), not {show(value)}")
        return [
            Table(self.source, f"{self.key_name(key)}[{i}]", item) for i, item in enumerate(value)
        ]

    def finish(self) -> None:
        """Refuse keys nobody asked for: a typo must not silently become a default."""
        unknown = sorted(set(self.data) - self._used)
        if unknown:
            allowed = ", ".join(sorted(self._used)) or "none"
            self.fail(unknown[0], f"unknown key (allowed here: {allowed})")
