"""API credentials: where they come from, and a wrapper that keeps them out of logs and reprs.

Credentials are read from the environment (``TRADEBAAS_DERIBIT_CLIENT_ID`` / ``TRADEBAAS_DERIBIT_CLIENT_SECRET``)
or from ``TRADEBAAS_HOME/secrets.toml``. The file must be private to its owner (mode 0600 or stricter): a key that
can trade real money must not be readable by other users, so a group/world-readable file is refused rather than
used. File layout::

    [deribit]                 # used for --exchange deribit (and as the default)
    client_id = "..."
    client_secret = "..."

    [deribit-testnet]         # optional; used for --exchange deribit-testnet
    client_id = "..."
    client_secret = "..."
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tradebaas.errors import UserError

ENV_CLIENT_ID = "TRADEBAAS_DERIBIT_CLIENT_ID"
ENV_CLIENT_SECRET = "TRADEBAAS_DERIBIT_CLIENT_SECRET"
SECRETS_FILE = "secrets.toml"


class Secret:
    """A string that never shows itself: ``repr``/``str``/f-strings print ``Secret(***)``.

    Call ``reveal()`` at the one place the value is needed (building the auth request). Equality compares values
    so tests can assert on them without printing them.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Refuse pickling: pickles end up in caches, queues and crash dumps.
        raise TypeError("Secret values cannot be pickled")


@dataclass(slots=True, frozen=True)
class Credentials:
    """An API key pair. ``client_id`` is not secret (it shows in logs and status); ``client_secret`` is."""

    client_id: str
    client_secret: Secret
    source: str = ""  # where they came from, for messages: "environment", "/path/secrets.toml [deribit]"


def check_private_file(path: Path) -> None:
    """Raise ``UserError`` unless ``path`` is a regular file readable only by its owner."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} is not a regular file")
    loose = stat.S_IMODE(st.st_mode) & (stat.S_IRWXG | stat.S_IRWXO)
    if loose:
        raise UserError(
            f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"it holds API keys, so it must be private: chmod 600 {path}"
        )


def load_credentials(
    home: Path | str | None,
    section: str = "deribit",
    *,
    environ: dict[str, str] | None = None,
) -> Credentials | None:
    """Credentials from the environment (first) or ``home/secrets.toml`` ``[section]``; None if neither has them.

    For ``section="deribit-testnet"`` a missing ``[deribit-testnet]`` section falls back to ``[deribit]``.
    Raises ``UserError`` for a half-set environment, a group/world-readable file, or a malformed file.
    """
    env = os.environ if environ is None else environ
    cid, csecret = env.get(ENV_CLIENT_ID, ""), env.get(ENV_CLIENT_SECRET, "")
    if cid or csecret:
        if not (cid and csecret):
            raise UserError(f"set both {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} (only one is set)")
        return Credentials(cid, Secret(csecret), "environment")
    if home is None:
        return None
    path = Path(home) / SECRETS_FILE
    if not path.exists():
        return None
    check_private_file(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    for name in (section, "deribit") if section != "deribit" else ("deribit",):
        table = data.get(name)
        if table is None:
            continue
        if not isinstance(table, dict) or not table.get("client_id") or not table.get("client_secret"):
            raise UserError(f"{path} [{name}] needs both client_id and client_secret")
        return Credentials(str(table["client_id"]), Secret(str(table["client_secret"])), f"{path} [{name}]")
    return None
