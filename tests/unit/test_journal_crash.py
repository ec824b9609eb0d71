"""A SIGKILL in the middle of a burst of writes loses nothing that was committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tradebaas.engine.journal.database import Journal

WRITER = textwrap.dedent("""
    import sys
    from tradebaas.engine.journal.database import Journal

    j = Journal.open(sys.argv[1])
    i = 0
    while True:
        i += 1
        with j.transaction() as conn:
            eid = j.append("burst", {"i": i, "pad": "x" * 100}, ts_ms=i, strategy_id="s", conn=conn)
            j.upsert("strategy_runtime", {"strategy_id": f"s{i}", "last_candle_ts_ms": eid, "updated_ts_ms": i},
                     key=["strategy_id"], conn=conn)
        print(eid, flush=True)  # printed only after COMMIT returned
""")


def test_sigkill_during_burst_keeps_every_committed_event(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    committed: list[int] = []
    for line in writer.stdout:
        committed.append(int(line))
        if len(committed) >= 300:
            break
    os.kill(writer.pid, signal.SIGKILL)
    committed += [int(line) for line in writer.stdout.read().split()]  # ids printed before the kill landed
    writer.wait()
    assert writer.returncode == -signal.SIGKILL

    with Journal.open(path, check=True) as j:
        ids = {e.id for e in j.events(kind="burst", limit=None)}
        assert set(committed) <= ids
        # derived rows committed with their events: never one without the other
        runtime = {r["last_candle_ts_ms"] for r in j.query("SELECT last_candle_ts_ms FROM strategy_runtime")}
        assert runtime == ids
        # and the journal is writable again
        assert j.append("after.crash", {}, ts_ms=0) > max(ids)
