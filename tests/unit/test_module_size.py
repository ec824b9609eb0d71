"""Small modules with one job: none over ~600 lines unless the first lines of its docstring say why.

The reason must be written where a reader starts (``Over 600 lines because ...`` in the docstring's first lines),
so a long module is a decision someone can read and revisit, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tradebaas

PACKAGE_ROOT = Path(tradebaas.__file__).resolve().parent
MAX_LINES = 600
REASON = "over 600 lines because"
HEAD_LINES = 6  # where in the docstring the reason must appear


def reason_at_top(source: str, filename: str) -> str | None:
    """The reason given in the first docstring lines (None when there is none, or it says nothing)."""
    doc = ast.get_docstring(ast.parse(source, filename)) or ""
    head = " ".join(doc.splitlines()[:HEAD_LINES]).lower()
    if REASON not in head:
        return None
    why = head.split(REASON, 1)[1].strip()
    return why if len(why) >= 20 else None


def test_a_reason_is_found_only_at_the_top_and_only_when_it_says_something():
    assert reason_at_top('"""Summary.\n\nOver 600 lines because the state machine is one piece."""', "m")
    assert reason_at_top('"""Summary.\n\nOver 600 lines because."""', "m") is None
    late = '"""Summary.\n' + "\n".join(["text"] * HEAD_LINES) + '\nOver 600 lines because it is one piece."""'
    assert reason_at_top(late, "m") is None
    assert reason_at_top("x = 1\n", "m") is None


def test_no_module_over_600_lines_without_a_reason_at_its_top():
    offenders = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_LINES and reason_at_top(source, str(path)) is None:
            offenders.append(f"{path.relative_to(PACKAGE_ROOT.parent)}: {lines} lines")
    assert not offenders, ("split these modules, or say why at the top of the docstring "
                           "('Over 600 lines because ...'):\n" + "\n".join(offenders))
