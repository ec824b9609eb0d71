"""Where the engine's strategies come from, which code version each runs, and the store of that code.

Four sources, one list (``strategy.available``):
- **built-ins** (``tradebaas/strategies/registry.py``): run as installed; code version = sha256 of their module;
- **files** in ``TRADEBAAS_HOME/strategies/*.py``: listed by a child process (``tradebaas.strategies.describe``: a
  file that fails to import, or hangs, is listed with its error and never stops the engine); started from a copy of
  the file stored under its code version and vetted first, so editing the file later changes nothing that runs;
- **entry points** of installed packages (group ``tradebaas.strategies``, ``name = "module:Class"``): listed by the
  same child, run as installed (like built-ins, they are code the machine's owner installed);
- **deployed** versions (``strategy.deploy``): stored content-addressed in ``TRADEBAAS_HOME/strategies/versions/
  <sha256>.py``, vetted before they are accepted, recorded in the journal (``strategy_versions``).
Every strategy that is not a built-in decides in a process of its own (``StrategyRunner``, ``strategy_process``), so
it holds only itself up.

Names are unique across sources: a deployed name or a file's strategy may not take a built-in's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradebaas.engine.journal.database import now_ms
from tradebaas.engine.journal.rows import VersionRow
from tradebaas.engine.journal.store import Store
from tradebaas.engine.live.budgets import Budgets
from tradebaas.errors import UserError
from tradebaas.home import Home
from tradebaas.strategies.loader import StrategyLoadError, load_class, source_version
from tradebaas.strategies.params import params_list, schema
from tradebaas.strategies.registry import available as builtin_names
from tradebaas.strategies.registry import get_strategy

log = logging.getLogger("tradebaas.engine.live.catalog")

ENTRY_POINT_GROUP = "tradebaas.strategies"
DESCRIBE_TIMEOUT_S = 30.0
BUILTIN, FILE, ENTRY_POINT, DEPLOYED = "builtin", "file", "entry_point", "deployed"


class UnknownVersionError(UserError):
    """No stored version matches (or a prefix matches several)."""


class Refused(UserError):
    """Vetting refused a version; ``report`` is the vetting report (with the traceback)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(slots=True)
class Entry:
    """One strategy the engine can start (``strategy.available``'s item)."""

    name: str
    source: str
    version: str
    origin: str
    description: str = ""
    params: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    class_name: str = ""
    versions: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "params": self.params, "source": self.source,
                "version": self.version, "origin": self.origin, "error": self.error, "versions": self.versions}


@dataclass(slots=True, frozen=True)
class Loaded:
    """A strategy class ready to run, with what the runner needs to know about it."""

    cls: type
    code_version: str
    warmup_candles: int
    isolated: bool


def module_version(cls: type) -> str:
    """Code version of an installed class: sha256 of its module's source."""
    return source_version(inspect.getsource(sys.modules[cls.__module__]))


class VersionStore:
    """Strategy sources content-addressed by sha256 under ``strategies/versions/`` (written atomically, checked
    on every read: a file that no longer matches its name is refused, never run)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, version: str) -> Path:
        return self.root / f"{version}.py"

    def put(self, source: str) -> str:
        version = source_version(source)
        target = self.path(version)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{version}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(source)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        return version

    def get(self, version: str) -> str:
        try:
            source = self.path(version).read_text(encoding="utf-8")
        except OSError as exc:
            raise StrategyLoadError(f"the source of version {version[:12]} is missing from {self.root} ({exc})") from None
        if source_version(source) != version:
            raise StrategyLoadError(f"{self.path(version)} does not hold version {version[:12]} any more "
                                    "(changed on disk); refusing to run it")
        return source


class Catalog:
    """The engine's view of every strategy source. Listing files and entry points imports user code, so it runs in
    a child process (cached per code version); loading a class for a runner happens in the engine, only for
    built-ins, entry points and vetted versions."""

    def __init__(self, home: Home, store: Store) -> None:
        self.home = home
        self.store = store
        self.files_dir = home.root / "strategies"
        self.versions = VersionStore(self.files_dir / "versions")
        self._described: dict[str, dict[str, Any]] = {}  # version or entry point value -> describe answer
        self._classes: dict[str, type] = {}

    # -- listing ---------------------------------------------------------------------------------------------
    async def entries(self) -> list[Entry]:
        """Every strategy, in a stable order: built-ins, files, entry points, deployed."""
        out = [self._builtin(name) for name in builtin_names()]
        taken = {e.name for e in out}
        files = self._files()
        points = self._entry_points()
        await self._describe([*(("source", text, str(path)) for path, text in files),
                              *(("entry_point", value, value) for _, value in points)])
        for path, text in files:
            version = source_version(text)
            answer = self._described.get(version, {"classes": [], "error": "not described yet"})
            if answer.get("error") or not answer.get("classes"):
                out.append(Entry(path.stem, FILE, version, str(path), error=answer.get("error") or "no strategy class"))
                continue
            for c in answer["classes"]:
                error = f"the name {c['name']!r} is taken by a built-in strategy" if c["name"] in taken else None
                out.append(Entry(c["name"], FILE, version, str(path), c["description"], c["params"], error,
                                 c["class_name"]))
        for ep_name, value in points:
            answer = self._described.get(value, {"classes": [], "error": "not described yet"})
            if answer.get("error") or not answer.get("classes"):
                out.append(Entry(ep_name, ENTRY_POINT, answer.get("version") or "", value,
                                 error=answer.get("error") or "no strategy class"))
                continue
            c = answer["classes"][0]
            error = f"the name {c['name']!r} is taken by a built-in strategy" if c["name"] in taken else None
            out.append(Entry(c["name"], ENTRY_POINT, answer.get("version") or "", value, c["description"],
                             c["params"], error, c["class_name"]))
        by_name: dict[str, list[VersionRow]] = {}
        for row in self.store.versions():
            if row.source_kind == DEPLOYED:
                by_name.setdefault(row.name, []).append(row)
        for name, rows in by_name.items():
            latest = rows[-1]
            described = latest.vetting.get("describe") or {}
            out.append(Entry(name, DEPLOYED, latest.version, f"versions/{latest.version}.py",
                             described.get("description", ""), described.get("params", []), None, latest.class_name,
                             [{"version": r.version, "deployed_ts_ms": r.created_ts_ms,
                               "warmup_candles": r.warmup_candles} for r in rows]))
        return out

    def _builtin(self, name: str) -> Entry:
        cls = get_strategy(name)
        return Entry(name, BUILTIN, module_version(cls), f"{cls.__module__}:{cls.__name__}",
                     schema(cls)["description"], params_list(cls), None, cls.__name__)

    def _files(self) -> list[tuple[Path, str]]:
        out = []
        for path in sorted(self.files_dir.glob("*.py")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                out.append((path, path.read_text(encoding="utf-8")))
        return out

    @staticmethod
    def _entry_points() -> list[tuple[str, str]]:
        return sorted((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))

    async def _describe(self, items: list[tuple[str, str, str]]) -> None:
        """Describe what is not cached yet, in one child process with a timeout."""
        todo = [(kind, payload, origin) for kind, payload, origin in items
                if (source_version(payload) if kind == "source" else payload) not in self._described]
        if not todo:
            return
        request = {"items": [{"kind": "source", "source": p, "filename": o} if k == "source" else
                             {"kind": "entry_point", "value": p} for k, p, o in todo]}
        answers: list[dict[str, Any]]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tradebaas.strategies.describe", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
            try:
                async with asyncio.timeout(DESCRIBE_TIMEOUT_S):
                    out, err = await proc.communicate(json.dumps(request).encode())
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                answers = [{"classes": [], "error": f"importing it took longer than {DESCRIBE_TIMEOUT_S:.0f} s"}] * len(todo)
            else:
                try:
                    answers = json.loads(out)["items"]
                except (ValueError, KeyError, TypeError):
                    tail = err.decode(errors="replace")[-2000:]
                    answers = [{"classes": [], "error": f"describing it crashed: {tail}"}] * len(todo)
        except OSError as exc:
            answers = [{"classes": [], "error": f"could not describe it: {exc}"}] * len(todo)
        for (kind, payload, _), answer in zip(todo, answers, strict=True):
            if kind == "source" and "timeout" not in str(answer.get("error") or ""):
                self._described[source_version(payload)] = answer
            elif kind == "entry_point":
                self._described[payload] = answer

    async def find(self, name: str) -> Entry:
        """The startable entry called ``name`` (UserError naming the known ones otherwise)."""
        entries = await self.entries()
        match = [e for e in entries if e.name == name or e.name == name.strip().lower().replace("-", "_")]
        good = [e for e in match if e.error is None]
        if good:
            return good[0]
        if match:
            raise UserError(f"strategy {name!r} cannot start: {match[0].error.splitlines()[0] if match[0].error else ''}")
        known = ", ".join(sorted({e.name for e in entries if e.error is None}))
        raise UserError(f"unknown strategy {name!r} (known: {known})")

    # -- versions --------------------------------------------------------------------------------------------
    def resolve_version(self, name: str, version: str) -> VersionRow:
        """The stored version of ``name`` that ``version`` (a unique prefix of >= 7 hex characters) names."""
        prefix = version.strip().lower()
        if len(prefix) < 7 or any(c not in "0123456789abcdef" for c in prefix):
            raise UnknownVersionError(f"version {version!r}: give at least 7 hex characters of a version "
                                      "(see `tradebaas strategy available`)")
        rows = self.store.versions_matching(prefix)
        if not rows:
            raise UnknownVersionError(f"no stored version {version!r}")
        if len(rows) > 1:
            raise UnknownVersionError(f"version {version!r} is ambiguous ({', '.join(r.version[:12] for r in rows)})")
        if rows[0].name != name:
            raise UnknownVersionError(f"version {rows[0].version[:12]} is a version of {rows[0].name!r}, "
                                      f"not of {name!r}")
        return rows[0]

    def record(self, source: str, *, name: str, class_name: str, kind: str, origin: str,
               vetting: dict[str, Any]) -> VersionRow:
        """Store ``source`` content-addressed and journal it as a version of ``name``."""
        version = self.versions.put(source)
        row = VersionRow(version, name, class_name, kind, origin, int(vetting.get("warmup_candles") or 0), vetting,
                         now_ms())
        self.store.save_version(row)
        return self.store.version(version) or row

    def load(self, name: str, code_version: str) -> Loaded:
        """The class a strategy runs: a stored version by its hash, else the installed built-in or entry point.
        Raises ``StrategyLoadError`` (missing or changed source) or ``UserError`` (unknown strategy)."""
        row = self.store.version(code_version) if code_version else None
        if row is not None and row.source_kind in (DEPLOYED, FILE):
            cls = self._classes.get(row.version)
            if cls is None:
                source = self.versions.get(row.version)
                cls = load_class(source, f"tb_strategy_{row.version[:16]}", f"<strategy {row.name} {row.version[:12]}>",
                                 row.class_name)
                self._classes[row.version] = cls
            return Loaded(cls, row.version, row.warmup_candles, True)
        if name in builtin_names():
            cls = get_strategy(name)
            return Loaded(cls, module_version(cls), 0, False)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name or self._described.get(ep.value, {}).get("classes", [{}])[0].get("name") == name:
                cls = ep.load()
                return Loaded(cls, module_version(cls), 0, True)
        raise UserError(f"strategy {name!r} is no longer available (not built in, no stored version "
                        f"{code_version[:12] or '?'}, no entry point)")

    # -- accepting code ----------------------------------------------------------------------------------------
    async def vet(self, source: str, name: str | None, instrument: str, settings: Budgets) -> dict[str, Any]:
        """Vet ``source`` in a child process on this engine's recorded candles of ``instrument`` (the bundled data
        when it has too few); the report (``tradebaas.strategies.vet``)."""
        from tradebaas.strategies.vet import vet_in_subprocess

        request = {"source": source, "name": name, "budget_ms": settings.vet_budget_ms,
                   "data": {"kind": "recorded", "home": str(self.home.root), "instrument": instrument}}
        return dict(await vet_in_subprocess(request, settings.vet_timeout_s))

    async def deploy(self, source: str, name: str | None, settings: Budgets,
                     instrument: str = "BTC_USDC-PERPETUAL") -> VersionRow:
        """Vet, store and journal a version of a strategy's code; ``Refused`` with the report when vetting says no.
        Deploying the same source again is a no-op that answers the stored version."""
        if not source.strip():
            raise UserError("the strategy source is empty")
        version = source_version(source)
        known = self.store.version(version)
        if known is not None and known.source_kind == DEPLOYED and (name is None or name == known.name):
            return known
        report = await self.vet(source, name, instrument, settings)
        if not report.get("ok"):
            from tradebaas.strategies.vet import one_line

            raise Refused(f"version {version[:12]} refused ({report.get('refused')}): "
                          f"{one_line(report.get('error') or 'refused')}", report)
        final = name or str(report.get("name") or "")
        if final in builtin_names() or final in {n for n, _ in self._entry_points()}:
            raise UserError(f"the name {final!r} is taken by an installed strategy; deploy under another name "
                            "(`--name`, or `eng.deploy(..., name=...)`)")
        cls = load_class(source, f"tb_strategy_{version[:16]}", f"<strategy {final} {version[:12]}>",
                         report.get("class_name") or None)
        self._classes[version] = cls
        describe = {"description": schema(cls)["description"], "params": params_list(cls)}
        return self.record(source, name=final, class_name=cls.__name__, kind=DEPLOYED, origin="deployed",
                           vetting={**report, "describe": describe})

    async def accept_file(self, entry: Entry, settings: Budgets, instrument: str) -> VersionRow:
        """A strategy from ``TRADEBAAS_HOME/strategies/``: its file's current source, vetted and stored, so what
        runs is pinned to that version however the file changes later."""
        known = self.store.version(entry.version)
        if known is not None:
            return known
        source = Path(entry.origin).read_text(encoding="utf-8")
        if source_version(source) != entry.version:
            raise UserError(f"{entry.origin} changed while starting it; start it again")
        report = await self.vet(source, entry.name, instrument, settings)
        if not report.get("ok"):
            first = (report.get("error") or "refused").splitlines()[0]
            raise Refused(f"{entry.origin} refused ({report.get('refused')}): {first}", report)
        describe = {"description": entry.description, "params": entry.params}
        return self.record(source, name=entry.name, class_name=entry.class_name, kind=FILE, origin=entry.origin,
                           vetting={**report, "describe": describe})

    def source(self, name: str, version: str | None = None) -> tuple[str, str]:
        """(version, source text) of ``name`` at ``version`` (default: what it would start with)."""
        if version:
            row = self.resolve_version(name, version)
            return row.version, self.versions.get(row.version)
        rows = self.store.versions(name)
        if rows:
            return rows[-1].version, self.versions.get(rows[-1].version)
        if name in builtin_names():
            module = sys.modules[get_strategy(name).__module__]
            text = inspect.getsource(module)
            return source_version(text), text
        raise UserError(f"no source known for strategy {name!r}")

