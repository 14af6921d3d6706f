"""The fenced code samples of README.md and docs/*.md, read the way the tests run them.

The rule every fence follows (tests/test_doc_samples.py fails on a fence that breaks it):

- The info string's first word is the fence's language, and every fence has one.
- ``python`` and ``sh`` fences are code, and run.  A code fence that cannot run here says
  so and why in its info string: ```` ```sh not run: needs a Xen host ````.
- A ``python`` fence whose first line is ``# PATH`` (``# tests/test_relay.py``) is a file
  of the document's sample project rather than a script; ``# PATH, fixed`` is a later
  version of PATH.  The project is run by pytest, as a user would (test_distribution.py).
- ``json`` and ``toml`` fences are data that must parse; ``text`` and ``yaml`` fences are
  output, layouts and files of other tools; ``hub-bytes`` and ``hub-conversation`` are
  run by test_hub_protocol.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = ("python", "sh")
DATA = ("json", "toml")
OTHER = ("text", "yaml", "hub-bytes", "hub-conversation")

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.S | re.M)
_NOT_RUN = re.compile(r"^not run: (?P<reason>\S.*)$")
_PROJECT_FILE = re.compile(r"^# (?P<path>[\w./-]+\.py)(?P<later>, fixed)?$")


@dataclass(frozen=True)
class Sample:
    """One fence: where it is, its language, why it does not run (if it does not)."""

    document: Path
    line: int
    language: str
    body: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def project_file(self) -> tuple[str, bool] | None:
        """(PATH, is a later version) when the fence is a file of the sample project."""
        if self.language != "python":
            return None
        found = _PROJECT_FILE.match(self.body.split("\n", 1)[0])
        return (found["path"], found["later"] is not None) if found else None


def samples(document: Path) -> list[Sample]:
    """Every fence of ``document``, in order."""
    text = document.read_text()
    found = []
    for fence in _FENCE.finditer(text):
        language, _, rest = fence["info"].strip().partition(" ")
        not_run = _NOT_RUN.match(rest.strip())
        if rest.strip() and not not_run:
            language = fence["info"]  # an info string the rule does not know: refused
        found.append(
            Sample(
                document=document,
                line=text.count("\n", 0, fence.start()) + 1,
                language=language,
                body=fence["body"],
                not_run=not_run["reason"] if not_run else None,
            )
        )
    return found


def every_sample() -> list[Sample]:
    return [sample for document in DOCUMENTS for sample in samples(document)]


def project(document: Path, *, fixed: bool) -> dict[str, str]:
    """The sample project of ``document``: its files as first written, or with their
    later (``, fixed``) versions."""
    files: dict[str, str] = {}
    for sample in samples(document):
        named = sample.project_file
        if named is not None and (fixed or not named[1]):
            files[named[0]] = sample.body
    return files
