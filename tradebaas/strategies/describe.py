"""What strategies a source file or an installed entry point defines, found in a child process.

Listing strategies means importing user code (``TRADEBAAS_HOME/strategies/*.py``, packages that declare an entry point
in the group ``tradebaas.strategies``). Code that hangs or crashes at import must never take the engine with it, so
the engine runs ``python -m tradebaas.strategies.describe`` with a timeout: one JSON request on stdin, one JSON answer
on stdout, a failure of one item reported as that item's ``error`` (with its traceback).

Request: ``{"items": [{"kind": "source", "source": "...", "filename": "..."} | {"kind": "entry_point", "value":
"module:Class"}]}``. Answer: ``{"items": [{"classes": [{name, class_name, description, params}], "error": str|null,
"version": str|null}]}`` in the same order (``version``: sha256 of the source, or of the entry point's module file).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import traceback
from typing import Any

from tradebaas.strategies.loader import (
    StrategyApiError,
    StrategyLoadError,
    check_api,
    module_from_source,
    source_version,
    strategy_classes,
)
from tradebaas.strategies.params import params_list, schema


def describe_class(cls: type) -> dict[str, Any]:
    return {"name": getattr(cls, "name", "") or cls.__name__, "class_name": cls.__name__,
            "description": schema(cls)["description"], "params": params_list(cls)}


def describe_item(item: dict[str, Any]) -> dict[str, Any]:
    """One request item -> its strategy classes, or the error that stopped them from loading."""
    try:
        if item.get("kind") == "entry_point":
            module_name, _, attr = str(item["value"]).partition(":")
            module = importlib.import_module(module_name)
            classes = [getattr(module, attr)] if attr else strategy_classes(module)
            version = source_version(inspect.getsource(module))
        elif item.get("kind") == "source":
            source = str(item["source"])
            version = source_version(source)
            module = module_from_source(source, f"tb_describe_{version[:16]}", str(item.get("filename", "<source>")))
            classes = strategy_classes(module)
        else:
            return {"classes": [], "error": f"unknown item kind {item.get('kind')!r}", "version": None}
        for cls in classes:
            check_api(cls)
        if not classes:
            return {"classes": [], "version": version, "error": "defines no strategy class (a class with `params` "
                    "and `on_candle`, e.g. a subclass of tradebaas.strategies.base.BaseStrategy)"}
        return {"classes": [describe_class(c) for c in classes], "error": None, "version": version}
    except (StrategyLoadError, StrategyApiError) as exc:
        return {"classes": [], "error": f"{exc}\n{exc.details}".strip(), "version": item.get("version")}
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"classes": [], "error": "".join(traceback.format_exception(exc)).strip(), "version": None}


def main() -> int:
    request = json.loads(sys.stdin.read() or "{}")
    answer_to = sys.stdout
    sys.stdout = sys.stderr  # what user code prints must not mix into the answer
    answer = {"items": [describe_item(item) for item in request.get("items", [])]}
    answer_to.write(json.dumps(answer))
    answer_to.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
