"""Whether the Hugging Face Hub can be used right now, decided in a few seconds.

Without this, a name that is neither a local path nor reachable on the Hub costs the libraries' retries (about
30 s for a dataset, 55 s for a model) before any error. With ``HF_HUB_OFFLINE`` set the libraries already go
straight to the local cache; without it, one TCP connection to the endpoint tells whether the Hub answers at all.
"""

from __future__ import annotations

import functools
import socket
import urllib.request
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 3.0


@functools.cache
def hub_unavailable() -> str | None:
    """Why the Hub cannot be used now (offline mode, or no connection to its endpoint), or None when it can."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)  # behind a proxy, the proxy is what must answer
    target = urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(url.hostname or "") else url
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError:
        return f"the Hub ({constants.ENDPOINT}) cannot be reached"
    return None
