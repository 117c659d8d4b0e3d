"""The Hugging Face Hub on machines without network (cluster compute nodes): the local cache first, one line when
something is neither cached nor reachable, within a second, instead of minutes of retries.

`from_hub(load, ...)` calls `load(local_files_only=True)` first; when that misses, it asks the Hub only if the Hub
can be reached (HF_HUB_OFFLINE unset and a TCP connection to HF_ENDPOINT's host within `CONNECT_TIMEOUT_S`),
else raises a SpecError naming what is missing and how to fetch it beforehand (`lmbench data SPEC` on a machine
with network fills the cache that compute nodes then read).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

from lmbench.errors import SpecError

T = TypeVar("T")
CONNECT_TIMEOUT_S = 2.0
FETCH_HINT = ("fetch it beforehand on a machine with network (`lmbench data SPEC` fills the Hugging Face cache; "
              "`huggingface-cli download {name}` does too) and point HF_HOME at that cache")


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE) is set to a true value."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """A TCP connection to the Hub's host opens within CONNECT_TIMEOUT_S (asked once per process)."""
    if offline_mode():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def unreachable_error(field: str, what: str, name: str) -> SpecError:
    why = "HF_HUB_OFFLINE is set" if offline_mode() else "the Hub cannot be reached from here"
    return SpecError(field, f"{what} {name!r} is not in the local Hugging Face cache and {why}; "
                            + FETCH_HINT.format(name=name))


def from_hub(load: Callable[..., T], *, field: str, what: str, name: str) -> T:
    """`load(local_files_only=True)`, else `load(local_files_only=False)` when the Hub can be reached, else a
    one-line SpecError on `field` (see the module docstring). `load`'s own errors on the second call propagate."""
    try:
        return load(local_files_only=True)
    except (OSError, ValueError):
        if not hub_reachable():
            raise unreachable_error(field, what, name) from None
    return load(local_files_only=False)
