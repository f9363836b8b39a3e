"""Local path or Hub id: the one rule every CLI applies to a model or dataset name before a library loads it.

Without it, a mistyped local path that reads like a Hub id (``outputs/nope``) or a Hub that cannot be reached costs
the libraries' retries (about 30 s for a dataset, 55 s for a model) before any error. Here:

- a name that can only be a local path (:func:`looks_like_path`) and does not exist fails at once, saying where it
  was looked for;
- a Hub id is checked against the Hub with one TCP connection of a few seconds (:func:`hub_unavailable`); when the
  Hub cannot be used, a model comes from the local cache only (``local_files_only``) and one that is not cached
  fails at once, in one line.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UserError

CONNECT_TIMEOUT_S = 3.0

# How the Hub spells a repository id: `name` or `org/name`, letters, digits, `-`, `_` and `.` (not `..`).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
OFFLINE_MODE = "HF_HUB_OFFLINE is set"


@functools.cache
def hub_unavailable() -> str | None:
    """Why the Hub cannot be used now (offline mode, or no connection to its endpoint), or None when it can."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return OFFLINE_MODE
    url = urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)  # behind a proxy, the proxy is what must answer
    target = urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(url.hostname or "") else url
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError:
        return f"the Hub ({constants.ENDPOINT}) cannot be reached"
    return None


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name


def looks_like_path(name: str, file_suffixes: tuple[str, ...] = ()) -> bool:
    """Whether `name` can only mean a local path: it starts with ``/``, ``.`` or ``~``, is no valid Hub id
    (``org/name``: a deeper path, a backslash, a space), ends in one of `file_suffixes`, or its first part is a
    folder here (``outputs/nope`` next to ``outputs/``)."""
    if name.startswith(("/", ".", "~")) or not looks_like_hub_id(name):
        return True
    if file_suffixes and name.lower().endswith(file_suffixes):
        return True
    first, slash, _ = name.partition("/")
    return bool(slash) and Path(first).is_dir()


def looked_for(path: Path) -> str:
    """Where a relative path was looked for (paths are relative to the current directory), for an error message."""
    return "" if path.is_absolute() else f" (looked for {path.resolve()}, relative to the current directory)"


def check_name(name: str, not_found: str, file_suffixes: tuple[str, ...] = ()) -> str | None:
    """Apply the path rule to a model or dataset `name`; return why the Hub cannot be used for it, or None.

    None: `name` exists locally, or it is a Hub id and the Hub answers. A reason: `name` is a Hub id that must come
    from the local cache. A path-like name that does not exist raises ``UserError("<not_found>: <name> (looked
    for ...)")``.
    """
    path = Path(name).expanduser()
    if path.exists():
        return None
    if looks_like_path(name, file_suffixes):
        raise UserError(f"{not_found}: {name}{looked_for(path)}")
    return hub_unavailable()


def not_cached(name: str, reason: str) -> str:
    """The end of the error for a model `name` that is neither local nor in the cache while the Hub is unusable."""
    return f"it is no local directory{looked_for(Path(name))} and no model in the local cache, and {reason}"


def check_model(name: str, what: str = "model", cached_file: str = "config.json") -> bool:
    """Apply the path rule to a model `name` (a local folder or a Hub id) before anything loads it.

    Returns whether it must load from the local cache only (pass ``local_files_only``). Raises UserError at once
    for a path-like name that does not exist (``<what> path not found``), and for a Hub id that the Hub cannot give
    now and that the local cache lacks (`cached_file` of the repository tells).
    """
    reason = check_name(name, f"{what} path not found")
    if reason is None:
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(name, cached_file), str)
    except ValueError:  # an id the Hub library itself rejects
        cached = False
    if not cached:
        raise UserError(f"cannot load {what} '{name}': {not_cached(name, reason)}")
    return True


def dataset_hub_problem() -> str | None:
    """Why a Hub dataset cannot be loaded now, or None. In offline mode `datasets` reads its cache by itself, at
    once; without it, an unreachable Hub would cost its retries."""
    reason = hub_unavailable()
    offline = os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    if reason is None or reason == OFFLINE_MODE or offline:
        return None
    return f"{reason} (set HF_HUB_OFFLINE=1 to use a cached copy)"


def check_dataset(name: str, file_suffixes: tuple[str, ...] = ()) -> None:
    """Apply the path rule to a dataset `name` before `datasets` loads it: a path-like name that does not exist, or
    a Hub id while the Hub cannot be reached, raises UserError at once."""
    check_name(name, "dataset file not found", file_suffixes)
    if not Path(name).expanduser().exists() and (problem := dataset_hub_problem()):
        raise UserError(
            f"dataset '{name}' is not a local file or directory and cannot be loaded from the Hub: {problem}"
            f"{looked_for(Path(name))}"
        )
