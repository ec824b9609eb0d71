"""Print the figures of a chaos run from its JSON lines (``python -m tests.chaos.figures [FILE]``): every summary
and audit record, one per line, for docs/reliability.md. ``make chaos`` runs it at the end."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.chaos import settings


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else settings.OUT
    if not path.exists():
        print(f"no chaos results at {path}", file=sys.stderr)
        return 1
    rounds: dict[str, int] = {}
    failed: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        kind = str(record.get("kind"))
        if "round" in record:
            rounds[kind] = rounds.get(kind, 0) + 1
            if record.get("violations"):
                failed.append(record)
        if kind.endswith(("_summary", "_audit")) or kind == "fuzz":
            print(json.dumps(record))
    print(json.dumps({"kind": "rounds", **rounds}))
    for record in failed:
        print(json.dumps({"kind": "failed_round", "round_kind": record["kind"], "round": record["round"],
                          "violations": record["violations"][:5]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
