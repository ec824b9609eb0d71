"""JSON on the simulator's wire: orjson when installed (several times faster), the stdlib otherwise.

Why a module: the transport decodes requests and encodes answers, the channel registry encodes each notification
once for all its subscribers; both must produce the same compact JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import orjson

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()

    dumpb: Callable[[Any], bytes] = orjson.dumps
    loads: Callable[[str | bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover
    import json

    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))

    def dumpb(obj: Any) -> bytes:
        return dumps(obj).encode()

    loads = json.loads
