"""``tradebaas up``'s first run (``tradebaas/launch.py``): the notebooks a user works in are copies outside the
repository, never overwritten; a server that dies or never answers is a clear error, not a dead URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tradebaas.errors import UserError
from tradebaas.launch import copy_notebooks, server_argv, urls, wait_until_answers


def test_first_run_copies_the_notebooks_and_later_runs_never_overwrite_them(tmp_path: Path) -> None:
    source = tmp_path / "repo" / "notebooks"
    source.mkdir(parents=True)
    (source / "control.ipynb").write_text("{project}")
    (source / "analytics.ipynb").write_text("{project}")
    (source / "notes.txt").write_text("not a notebook")
    home = tmp_path / "home" / "notebooks"

    first = copy_notebooks(source, home)
    assert first.copied == ["analytics.ipynb", "control.ipynb"]
    assert sorted(p.name for p in home.iterdir()) == ["analytics.ipynb", "control.ipynb"]
    assert "copied analytics.ipynb, control.ipynb" in first.lines(source)[0]

    (home / "control.ipynb").write_text("{the user's work}")
    (source / "research.ipynb").write_text("{new in the project}")
    second = copy_notebooks(source, home)
    assert (home / "control.ipynb").read_text() == "{the user's work}"  # never overwritten
    assert second.copied == ["research.ipynb"] and second.kept_same == ["analytics.ipynb"]
    assert second.kept_different == ["control.ipynb"]
    assert any("kept your control.ipynb" in line and str(source) in line for line in second.lines(source))
    assert (source / "control.ipynb").read_text() == "{project}"  # the repository's copy is untouched


def test_a_server_that_exits_before_answering_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "lab.log"
    log.write_text("Traceback: something broke\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(10)
    with pytest.raises(UserError, match="(?s)exited with 3 before answering.*something broke"):
        wait_until_answers(f"http://127.0.0.1:{free_port()}", "t", proc, log, timeout_s=5)


def test_a_server_that_never_answers_times_out_with_its_log(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(UserError, match="did not answer .* within 0.3 s"):
            wait_until_answers(f"http://127.0.0.1:{free_port()}", "t", proc, tmp_path / "lab.log", timeout_s=0.3)
    finally:
        proc.kill()
        proc.wait(10)


def test_the_server_serves_the_copy_and_the_cockpit_is_voila_on_the_control_notebook(tmp_path: Path) -> None:
    argv = server_argv("python", tmp_path, 8888, "tok", as_root=True)
    assert f"--ServerApp.root_dir={tmp_path}" in argv and "--no-browser" in argv and "--allow-root" in argv
    assert "--LabApp.default_url=/lab/tree/notebooks/control.ipynb" in argv
    # the engine's files in the home are not offered to a click in the file browser
    assert {"--ContentsManager.hide_globs=engine.json", "--ContentsManager.hide_globs=journal.sqlite*"} <= set(argv)
    # INTERFACE.md's path: notebooks/control.ipynb, under the home
    cockpit, lab = urls("http://127.0.0.1:8888", "tok")
    assert cockpit == "http://127.0.0.1:8888/voila/render/notebooks/control.ipynb?token=tok"
    assert lab == "http://127.0.0.1:8888/lab/tree/notebooks/control.ipynb?token=tok"
    # --notebook-dir serves a folder of notebooks itself
    assert urls("http://h", "t", "control.ipynb")[1] == "http://h/lab/tree/control.ipynb?token=t"
