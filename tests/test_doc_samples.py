"""Every code sample of README.md and docs/*.md runs as written.

Which fences are code, and how a fence says it cannot run here, is the rule of
tests/helpers/docsamples.py.  Each runnable sample runs in a directory of its own (holding a
link to the scenario library, as a checkout does) with a run directory of its own, and
must exit 0 leaving nothing behind.  The files of a document's sample project
(docs/pytest.md's relay) are run by pytest from an installed package in
test_distribution.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import docsamples

from vchansim.rundir import RUNDIR_ENV, RunDir

#: Bound on one sample (a scenario run, a connect that waits for its server).
SAMPLE_DEADLINE = 120.0

SAMPLES = docsamples.every_sample()


def _ids(sample: docsamples.Sample) -> str:
    return sample.name


def test_every_fence_follows_the_rule() -> None:
    known = docsamples.CODE + docsamples.DATA + docsamples.OTHER
    broken = [f"{s.name}: ```{s.language}" for s in SAMPLES if s.language not in known]
    assert not broken, f"fences with no known language (see tests/helpers/docsamples.py): {broken}"
    misplaced = [s.name for s in SAMPLES if s.not_run and s.language not in docsamples.CODE]
    assert not misplaced, f"'not run:' on a fence that is not code: {misplaced}"


@pytest.mark.parametrize(
    "sample", [s for s in SAMPLES if s.language in docsamples.DATA], ids=_ids
)
def test_the_data_sample_parses(sample: docsamples.Sample) -> None:
    if sample.language == "toml":
        tomllib.loads(sample.body)
        return
    decoder, text, at = json.JSONDecoder(), sample.body, 0
    while text[at:].strip():  # one or more JSON values (a trace's records)
        at = len(text) - len(text[at:].lstrip())
        _, at = decoder.raw_decode(text, at)


@pytest.mark.parametrize(
    "sample",
    [s for s in SAMPLES if s.language in docsamples.CODE and s.project_file is None],
    ids=_ids,
)
def test_the_code_sample_runs(sample: docsamples.Sample, tmp_path: Path, rundir: RunDir) -> None:
    if sample.not_run:
        pytest.skip(f"{sample.name} is not run here: {sample.not_run}")
    (tmp_path / "scenarios").symlink_to(docsamples.ROOT / "scenarios")
    script = tmp_path / ("sample.py" if sample.language == "python" else "sample.sh")
    script.write_text(sample.body)
    command = [sys.executable, script.name] if sample.language == "python" else [
        "bash", "-e", "-o", "pipefail", script.name
    ]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=os.environ | {RUNDIR_ENV: str(rundir.path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SAMPLE_DEADLINE,
    )
    assert done.returncode == 0, (
        f"{sample.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
