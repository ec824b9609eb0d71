"""``%%tradebaas_strategy``: remember the source of a notebook cell that defines a strategy, so that
``eng.deploy(MyStrategy)`` can send exactly that text to the engine.

Why a cell magic: a class defined in a notebook cell has no file, so ``inspect.getsource`` cannot find it
reliably (it guesses from IPython's history, and a cell edited after it ran gives the wrong text). The magic sees
the cell's text at the moment it runs, which is the code that made the class.

What it promises:

- the cell runs in the user's namespace exactly like a normal cell (``shell.run_cell``: its output, its last
  expression, its traceback); a cell that fails still fails (the kernel marks it as an error, so "Run All" and
  papermill stop there) and remembers nothing;
- every strategy class the cell *defined* (added or replaced in the namespace; imported ones such as ``Razor`` do
  not count) is remembered with the cell's source, keyed by the class object itself (weakly: re-running the cell
  makes a new class with its own source, and the old one can go);
- the source must stand on its own, because the engine runs only that text, in a fresh module. It is checked at
  once: executed in a fresh module (``loader.load_class``, output hidden) and scanned for names it uses but does
  not define (a helper or constant from another cell). A problem is printed in the cell's output with the fix;
  the class is still remembered, and the engine's own vetting has the last word.

Registered by ``%load_ext tradebaas``, and automatically by ``tb.connect()`` and ``tb.ControlPanel(...)`` when they
run inside IPython (:func:`register_if_ipython`). IPython is imported only inside functions, so importing this
module (the client does, to find a captured source) costs nothing outside a kernel.
"""

from __future__ import annotations

import builtins
import contextlib
import dis
import io
import sys
import types
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tradebaas.strategies import loader

__all__ = ["CapturedStrategy", "captured", "defined_strategy_classes", "load_ipython_extension",
           "register_if_ipython", "self_contained_problem", "undefined_names"]

MAGIC_NAME = "tradebaas_strategy"


@dataclass(frozen=True, slots=True)
class CapturedStrategy:
    """What a ``%%tradebaas_strategy`` cell left for one strategy class it defined.

    ``source`` is the cell's text as the user wrote it; ``version`` its code version (sha256 hex, what the engine
    will call it); ``problem`` is None when the source loads on its own in a fresh module, else the warning that
    was printed."""

    class_name: str
    name: str
    source: str
    version: str
    problem: str | None = None


_CAPTURED: weakref.WeakKeyDictionary[type, CapturedStrategy] = weakref.WeakKeyDictionary()


def captured(cls: type) -> CapturedStrategy | None:
    """The captured cell of ``cls`` (None when it was not defined in a ``%%tradebaas_strategy`` cell)."""
    try:
        return _CAPTURED.get(cls)
    except TypeError:  # not weak-referenceable: never captured
        return None


def defined_strategy_classes(before: Mapping[str, Any], after: Mapping[str, Any], module_name: str) -> list[type]:
    """The strategy classes a cell defined: names bound to a new object after it ran, whose class was made in
    the namespace's own module (``__main__`` in a kernel) -- so an imported strategy does not count."""
    found: list[type] = []
    for key, obj in after.items():
        if before.get(key, _MISSING) is obj or not loader.is_strategy_class(obj):
            continue
        if getattr(obj, "__module__", None) == module_name and obj not in found:
            found.append(obj)
    return found


_MISSING = object()
_LOADS = {"LOAD_GLOBAL", "LOAD_NAME"}


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def undefined_names(source: str, module_globals: Mapping[str, Any], filename: str = "<cell>") -> list[str]:
    """Names the code of ``source`` reads as globals that neither ``module_globals`` (the module after it ran)
    nor the builtins define: what would raise ``NameError`` later, inside ``on_candle``, in the engine.

    Static (bytecode), so it also sees uses inside methods that loading never runs. A name a class body or a
    function stores itself is local to it and not counted; ``global x`` assignments anywhere count as defined."""
    code = compile(source, filename, "exec")
    defined = set(module_globals) | set(dir(builtins))
    used: list[str] = []
    for obj in _code_objects(code):
        instructions = list(dis.get_instructions(obj))
        local = {str(i.argval) for i in instructions if i.opname in {"STORE_NAME", "DELETE_NAME"}}
        defined |= {str(i.argval) for i in instructions if i.opname in {"STORE_GLOBAL", "DELETE_GLOBAL"}}
        for ins in instructions:
            if ins.opname in _LOADS:
                name = str(ins.argval)
                if (ins.opname == "LOAD_GLOBAL" or name not in local) and name not in used:
                    used.append(name)
    return [name for name in used if name not in defined]


def self_contained_problem(source: str, classes: list[type], user_ns: Mapping[str, Any] | None = None,
                           filename: str = "<%%tradebaas_strategy cell>") -> str | None:
    """None when ``source`` loads in a fresh module, defines ``classes`` there, keeps the strategy API and reads
    no global it does not define; else a one-paragraph warning with the fix. ``user_ns`` only improves the words
    ("defined in another cell")."""
    what = ", ".join(c.__name__ for c in classes)
    module_name = f"tradebaas_cell_{loader.source_version(source)[:16]}"
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            module = loader.module_from_source(source, module_name, filename)
    except loader.StrategyLoadError as exc:
        last = (exc.details.strip().splitlines() or [str(exc)])[-1]
        hint = ""
        if last.startswith("NameError") and user_ns is not None:
            hint = " (it uses a name defined in another cell)"
        elif last.startswith(("SyntaxError", "IndentationError")):
            hint = " (IPython syntax such as %magics or !commands is not Python: keep it out of a strategy cell)"
        return (f"{what}: this cell does not run on its own{hint}: {last}. The engine runs only this cell's "
                "text, in a fresh module: put every import, helper and constant it needs into this cell, then "
                "run it again.")
    try:
        problems: list[str] = []
        missing = undefined_names(source, vars(module), filename)
        if missing:
            elsewhere = [n for n in missing if user_ns is not None and n in user_ns]
            where = " (defined in another cell)" if elsewhere and len(elsewhere) == len(missing) else ""
            problems.append(f"it uses {', '.join(missing)}, which this cell does not define{where}. The engine "
                            "runs only this cell's text: move those definitions (and the imports they need) into "
                            "this cell, then run it again.")
        for cls in classes:
            fresh = getattr(module, cls.__name__, None)
            if not loader.is_strategy_class(fresh):
                problems.append(f"{cls.__name__} is not defined at the top level of the cell.")
                continue
            try:
                loader.check_api(fresh)  # type: ignore[arg-type]
            except loader.StrategyApiError as exc:
                problems.append(f"the engine will refuse it: {exc}")
        return f"{what}: " + " ".join(problems) if problems else None
    finally:
        sys.modules.pop(module_name, None)


def _record(source: str, classes: list[type], user_ns: Mapping[str, Any]) -> list[CapturedStrategy]:
    problem = self_contained_problem(source, classes, user_ns)
    version = loader.source_version(source)
    out = []
    for cls in classes:
        entry = CapturedStrategy(cls.__name__, str(getattr(cls, "name", "") or cls.__name__), source, version,
                                 problem)
        _CAPTURED[cls] = entry
        out.append(entry)
    return out


def _make_magic(shell: Any) -> Any:
    from IPython.core.error import UsageError

    def tradebaas_strategy(line: str, cell: str) -> None:
        """Run this cell as usual and remember its source for every strategy class it defines, so that
        ``eng.deploy(MyStrategy)`` sends exactly this cell to the engine.

        The cell must stand on its own (imports, helpers and constants inside it): the engine runs only this
        text, in a fresh module. That is checked right away, and a warning with the fix is printed when not.
        """
        if line.strip():
            raise UsageError(f"%%{MAGIC_NAME} takes no arguments (got {line.strip()!r})")
        user_ns = shell.user_ns
        before = dict(user_ns)
        result = shell.run_cell(cell, store_history=False)
        if not result.success:  # the traceback is already shown; make the cell itself fail, quietly
            raise UsageError(f"the cell failed (see above); no strategy was captured by %%{MAGIC_NAME}")
        classes = defined_strategy_classes(before, user_ns, str(user_ns.get("__name__", "__main__")))
        if not classes:
            print(f"%%{MAGIC_NAME}: this cell defines no strategy class (a class with `params` and `on_candle`, "
                  "e.g. a subclass of tradebaas.strategies.base.BaseStrategy); nothing to deploy.",
                  file=sys.stderr)
            return
        entries = _record(cell, classes, user_ns)
        if entries[0].problem:
            print(f"tradebaas: {entries[0].problem}", file=sys.stderr)

    return tradebaas_strategy


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%tradebaas_strategy`` on ``ipython`` (``%load_ext tradebaas``); doing it twice is harmless."""
    if MAGIC_NAME in ipython.magics_manager.magics.get("cell", {}):
        return
    ipython.register_magic_function(_make_magic(ipython), magic_kind="cell", magic_name=MAGIC_NAME)


def register_if_ipython() -> bool:
    """Register the magic when running inside IPython (a kernel, the IPython shell); True when it is there.

    Never imports IPython itself: a script that has not imported it is not running inside it."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return False
    load_ipython_extension(shell)
    return True
