"""The scenario library shipped inside the package, found by name.

The library lives in the package, ``vchansim/scenarios/*.toml`` (a checkout's top-level
``scenarios/`` links to it), so ``vchansim run kill-client`` works for a pip user as for
a developer, without knowing where pip put the files.  A name is a file's stem, which is
also its ``name`` key.
"""

from __future__ import annotations

from pathlib import Path

from .scenario import ScenarioError

#: Where the built-in scenarios are.
LIBRARY = Path(__file__).with_name("scenarios")


def builtin_names() -> list[str]:
    """The built-in scenarios' names, sorted."""
    return sorted(path.stem for path in LIBRARY.glob("*.toml"))


def builtin_path(name: str) -> Path:
    """The file of built-in scenario ``name``; ScenarioError naming the known ones."""
    path = LIBRARY / f"{name}.toml"
    if "/" in name or not path.is_file():
        known = ", ".join(builtin_names()) or "none are installed"
        raise ScenarioError(f"{name!r} is not a built-in scenario (built-in: {known})")
    return path


def resolve(entry: str) -> Path:
    """A scenario argument as a path: an existing file or directory as it is, else the
    built-in scenario of that name (``all`` is the whole library)."""
    path = Path(entry)
    if path.exists():
        return path
    if entry == "all":
        return LIBRARY
    if path.suffix == ".toml" or "/" in entry:  # meant as a file: say it is missing
        raise ScenarioError(f"{entry}: no such scenario file or directory")
    return builtin_path(entry)
