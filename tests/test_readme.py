"""The READMEs' code runs: every python block is a section of a tested example file.

tests/test_examples.py runs each file of docs/examples; this holds the READMEs to them,
and checks what the README's quick start says it prints.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READMES = [ROOT / "README.md", ROOT / "packages" / "tracker-zmq" / "README.md"]
EXAMPLES = {p: p.read_text() for p in (ROOT / "docs" / "examples").glob("*.py")}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_is_part_of_a_tested_example(readme: Path):
    blocks = python_blocks(readme.read_text())
    assert blocks, f"{readme} has no python block"
    for block in blocks:
        homes = [p.name for p, text in EXAMPLES.items() if block in text]
        assert homes, f"this block of {readme.name} is in no docs/examples file:\n{block}"


@pytest.mark.cluster
def test_the_readme_quick_start_prints_what_it_says():
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "readme_quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "web-2 sees ['alice', 'bob']" in lines
    assert "web-2 sees [] after the connections ended" in lines
    assert sum("'room:42': ([('" in line for line in lines) == 2  # two joins on web-1
    assert sum("'room:42': ([], [('" in line for line in lines) == 2  # and two leaves
