"""What ``tradebaas up`` (``make run``) does after the engine is up: the user's own notebooks, a Jupyter server
that serves JupyterLab and the cockpit, and a URL printed only once it answers.

Decisions, and why:

- **Notebooks live outside the repository.** On first run the project's notebooks (``notebooks/*.ipynb``) are
  copied into ``TRADEBAAS_HOME/notebooks`` and the server's root is ``TRADEBAAS_HOME``: JupyterLab's autosave,
  outputs and a user's edits land in the copy, so ``git status`` of the checkout stays clean after a session. An
  existing copy is never overwritten (the user's work wins; ``up`` says which ones it kept, and where the project's
  newer ones are). The control notebook keeps the path the interface names, ``notebooks/control.ipynb`` (now under
  the home), and the home's reports and logs are in the file browser beside it; the engine's files (journal,
  ``engine.json`` with its token, lock) are hidden from the file browser so nobody deletes them by a click.
- **The cockpit needs no "Run all".** The same Jupyter server runs Voilà's server extension (a pinned ``voila``
  package; no JupyterLab extension build), so ``/voila/render/notebooks/control.ipynb`` executes the control
  notebook in a fresh ``tradebaas`` kernel and shows its live panel, widgets and chart included. That URL is "the cockpit" and is
  what the browser opens; the JupyterLab URL (the same notebook, to work in) is printed beside it.
- **The URL is printed only once the server answers** (``GET /api/status`` with the token): a URL that does not
  load yet is the first thing a new user would try.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tradebaas.errors import UserError

#: The notebook the cockpit shows, relative to the server's root (TRADEBAAS_HOME): INTERFACE.md's path.
CONTROL = "notebooks/control.ipynb"
#: What the file browser does not list under TRADEBAAS_HOME: the engine's own files (jupyter_server's defaults kept).
HIDDEN = ("__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*~", "journal.sqlite*", "engine.json", "engine.lock")


@dataclass
class NotebookCopy:
    """What :func:`copy_notebooks` did: the names it copied, and the names it left alone (the user's copy
    exists) split by whether the project's version differs from it."""

    folder: Path
    copied: list[str] = field(default_factory=list)
    kept_same: list[str] = field(default_factory=list)
    kept_different: list[str] = field(default_factory=list)

    def lines(self, source: Path) -> list[str]:
        """What to tell the user, one line each."""
        out = []
        if self.copied:
            out.append(f"notebooks: copied {', '.join(self.copied)} to {self.folder} (yours to edit; the "
                       "repository's stay untouched)")
        if self.kept_different:
            out.append(f"notebooks: kept your {', '.join(self.kept_different)} in {self.folder}; the project's "
                       f"newer version is in {source} (copy it over yourself if you want it)")
        if not self.copied and not self.kept_different:
            out.append(f"notebooks: {self.folder}")
        return out


def copy_notebooks(source: Path, dest: Path) -> NotebookCopy:
    """Copy ``source/*.ipynb`` into ``dest`` (created if missing), never overwriting a file already there."""
    dest.mkdir(parents=True, exist_ok=True)
    result = NotebookCopy(dest)
    for path in sorted(source.glob("*.ipynb")) if source.is_dir() else []:
        target = dest / path.name
        if not target.exists():
            shutil.copyfile(path, target)
            result.copied.append(path.name)
        elif filecmp.cmp(path, target, shallow=False):
            result.kept_same.append(path.name)
        else:
            result.kept_different.append(path.name)
    return result


def answers(base_url: str, token: str, timeout_s: float = 2.0) -> bool:
    """Whether the Jupyter server at ``base_url`` answers its status API with ``token``."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_answers(base_url: str, token: str, proc: subprocess.Popen[bytes], log: Path,
                       timeout_s: float = 120.0, poll_s: float = 0.2,
                       clock: Callable[[], float] = time.monotonic) -> None:
    """Return once the server answers; ``UserError`` (with the end of its log) if it exits or does not answer
    within ``timeout_s``."""
    deadline = clock() + timeout_s
    while not answers(base_url, token):
        if proc.poll() is not None:
            raise UserError(f"JupyterLab exited with {proc.returncode} before answering; its log ({log}) ends:\n"
                            + _tail(log))
        if clock() > deadline:
            raise UserError(f"JupyterLab did not answer at {base_url} within {timeout_s:g} s (log: {log})")
        time.sleep(poll_s)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def server_argv(python: str, root_dir: Path, port: int, token: str, as_root: bool, control: str = CONTROL
                ) -> list[str]:
    """The Jupyter server ``up`` runs: JupyterLab (with Voilà's server extension, installed with the project)
    on 127.0.0.1, rooted at ``root_dir`` (``control``: the control notebook's path under it, opened by default);
    it never opens a browser itself (``up`` does, once it answers)."""
    argv = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={root_dir}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
            f"--LabApp.default_url=/lab/tree/{control}", "--no-browser",
            *(f"--ContentsManager.hide_globs={glob}" for glob in HIDDEN),
            # the cockpit shows a failing cell's traceback rather than an empty page
            "--VoilaConfiguration.show_tracebacks=True"]
    if as_root:  # containers and CI run as root; Jupyter refuses that unless told
        argv.append("--allow-root")
    return argv


def urls(base_url: str, token: str, control: str = CONTROL) -> tuple[str, str]:
    """(the cockpit, JupyterLab on the control notebook), with the token."""
    return (f"{base_url}/voila/render/{control}?token={token}", f"{base_url}/lab/tree/{control}?token={token}")
