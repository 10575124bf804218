"""Fail fast before a download when its server cannot be reached.

Without a network a Hugging Face Hub or urllib download retries for a minute or more
before it gives up. `require_online` tries one TCP connection first (a few seconds at most)
and turns a failure into one UserError line that says how to get the data another way.
"""
from __future__ import annotations

import os
import socket
import threading
import urllib.request
from urllib.parse import urlsplit

from dann.errors import UserError

HUB_HOST = "huggingface.co"
HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def require_online(what: str, url: str, fix: str, timeout: float = 3.0) -> None:
    """Raise UserError at once if a download of `url` cannot work: a Hub offline switch is
    set (Hub URLs only), or no TCP connection to the server (or to the proxy set for the
    URL's scheme, e.g. https_proxy) opens within `timeout` seconds.

    The message reads `cannot download <what> from <host>: <why>; <fix>`.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"not a URL: {url!r}")
    if _is_hub(parts.hostname):
        for name in HUB_OFFLINE_VARS:
            if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
                raise UserError(f"cannot download {what} from {parts.hostname}: offline mode "
                                f"({name}={os.environ[name]}); {fix}")
    host, port, through = _first_hop(parts)
    problem = _connect(host, port, timeout)
    if problem:
        raise UserError(f"cannot download {what} from {parts.hostname}: no connection{through} "
                        f"({problem}); {fix}")


def _is_hub(hostname: str) -> bool:
    """huggingface.co, or the mirror that HF_ENDPOINT points the Hub clients at."""
    mirror = urlsplit(os.environ.get("HF_ENDPOINT", "")).hostname
    return hostname in (HUB_HOST, mirror) or hostname.endswith("." + HUB_HOST)


def _first_hop(parts) -> tuple[str, int, str]:
    """(host, port, note) a download connects to first: the proxy set for the URL's scheme
    (https_proxy / HTTPS_PROXY, http_proxy for http://, minus no_proxy hosts), else the server."""
    proxy = urllib.request.getproxies_environment().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass_environment(parts.hostname):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        port = p.port or (443 if p.scheme == "https" else 80)
        return p.hostname, port, f" to the proxy {p.hostname}:{port}"
    return parts.hostname, parts.port or (80 if parts.scheme == "http" else 443), ""


def _connect(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection to host:port opens within `timeout` s, else why not.

    The attempt runs in a daemon thread because the timeout of create_connection does not
    cover the name lookup, which can hang far longer on a machine with a dead DNS server.
    """
    outcome: list[BaseException | None] = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except BaseException as e:  # handed to the caller's thread
            outcome.append(e)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # a little slack for the connect's own timeout to fire first
    if not outcome or isinstance(outcome[0], (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    error = outcome[0]
    if error is None:
        return None
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {host}:{port}"
    if isinstance(error, OSError):
        return error.strerror or str(error) or type(error).__name__
    raise error  # not a network failure: a bug, shown as one
