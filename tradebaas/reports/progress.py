"""How far a running report is, read from the notebook papermill is writing: ``report run`` shows it meanwhile.

papermill saves the output notebook when each cell starts, with ``metadata.papermill.status`` per cell (pending,
running, completed), so the run's own file says which code cell runs and under which heading, wherever the run
executes (in the engine or in the CLI): nothing in the engine changes for it. The file may be read half-written;
that read says "no news" (None), the next one is whole.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True, slots=True)
class Progress:
    """Code cell ``cell`` of ``cells`` is running (or the last one finished), under the heading ``section``."""

    cell: int
    cells: int
    section: str

    def text(self, name: str, elapsed_s: float) -> str:
        where = f" ({self.section})" if self.section else ""
        return f"report {name}: cell {self.cell} of {self.cells}{where}, {elapsed_s:.0f} s"


def notebook_progress(path: Path) -> Progress | None:
    """The progress recorded in the output notebook at ``path``; None before it exists or while half-written."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    code = 0
    section = ""
    current: tuple[int, str] | None = None
    last_done: tuple[int, str] | None = None
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else str(source)
            heading = next((ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")), "")
            section = heading or section
            continue
        if cell.get("cell_type") != "code":
            continue
        code += 1
        status = (cell.get("metadata", {}).get("papermill") or {}).get("status")
        if status == "running" and current is None:
            current = (code, section)
        elif status == "completed":
            last_done = (code, section)
    found = current or last_done
    return None if found is None or code == 0 else Progress(found[0], code, found[1])


class ProgressLine:
    """Writes progress to a terminal, one line rewritten in place (one line per change when not a terminal), and
    only when it changed or ``every_s`` passed."""

    def __init__(self, name: str, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.started = time.monotonic()
        self._last: tuple[str, float] | None = None
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def show(self, progress: Progress | None, status: str) -> None:
        elapsed = time.monotonic() - self.started
        text = progress.text(self.name, elapsed) if progress else f"report {self.name}: {status}, {elapsed:.0f} s"
        key = text.rsplit(",", 1)[0]
        if self._last is not None and self._last[0] == key and elapsed - self._last[1] < self.every_s:
            return
        self._last = (key, elapsed)
        if self._tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self._tty and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()
