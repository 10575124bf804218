"""Downloads that fail fast and never leave half a file: `require_online`, and the archives
and files datasets publish (`Remote`, `download_file`, `download_archive`).

Without a network a Hugging Face Hub or urllib download retries for a minute or more
before it gives up. `require_online` tries one TCP connection first (a few seconds at most)
and turns a failure into one UserError line that says how to get the data another way.
A download streams to a temporary name beside its target and is checked (size, sha256 or
md5) before it is renamed into place; an archive is extracted into a scratch folder and
checked before its folders are moved into place.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import threading
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from dann.errors import UserError, note

HUB_HOST = "huggingface.co"
HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
READ_TIMEOUT = 60  # seconds a stalled transfer waits for its next bytes
CHUNK = 1 << 20


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


# ---------------------------------------------------------------------------- published files

@dataclass(frozen=True)
class Remote:
    """A file a dataset's authors (or a reference library) publish, and what it must be."""
    url: str
    checksum: str | None  # "sha256:<hex>" or "md5:<hex>"; None where no source publishes one
    size: int | None = None  # bytes, where a source gives it

    def describe(self) -> str:
        if self.size is None:
            return "size unknown"
        return f"{self.size / 1e9:.1f} GB" if self.size >= 1e9 else f"{self.size / 1e6:.1f} MB"


def download_file(remote: Remote, target: Path, what: str, fix: str) -> None:
    """`remote` saved as `target`, checked. Every failure (no connection, an HTTP error, a cut
    transfer, a wrong size or checksum) is one UserError and leaves neither the file nor a
    folder this call created."""
    target = Path(target)
    with _cleanup_if_new(target.parent):
        _fetch(remote, target, what, fix)


def download_archive(remote: Remote, into: Path, what: str, fix: str, check: Callable[[Path], str | None]) -> None:
    """Download the archive `remote` (.zip or .tar, any compression), extract it and move its
    top-level entries into `into` (those not there already). `check(folder)` looks at the extracted
    tree first and returns what is wrong with it, or None: where no checksum is published this
    is the only check, so it should look for the layout the dataset expects. Nothing reaches
    `into` unless every check passes; the archive itself is deleted."""
    into = Path(into)
    with _cleanup_if_new(into):
        scratch = into / f".download.{os.getpid()}.partial"
        try:
            archive = scratch / "archive"
            _fetch(remote, archive, what, fix)
            tree = scratch / "tree"
            _extract(archive, tree, what, remote.url, fix)
            archive.unlink()
            problem = check(tree)
            if problem:
                raise UserError(f"the archive of {what} from {remote.url} is not as expected ({problem}); {fix}")
            for entry in sorted(tree.iterdir()):
                if not (into / entry.name).exists():  # what is there already stays
                    entry.replace(into / entry.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _cleanup_if_new(folder: Path):
    """Creates `folder` (and its missing parents), and removes those it created again if what
    follows fails and they are empty."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break  # not empty: something else wrote there meanwhile
        raise


def _fetch(remote: Remote, target: Path, what: str, fix: str) -> None:
    require_online(what, remote.url, fix)
    algorithm, expected = remote.checksum.split(":") if remote.checksum else (None, None)
    digest = hashlib.new(algorithm) if algorithm else None
    unchecked = "" if digest else "; no checksum is published for it: its contents are checked instead"
    note(f"downloading {what} ({remote.describe()}) from {remote.url}{unchecked}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    received = 0
    try:
        try:
            with urllib.request.urlopen(remote.url, timeout=READ_TIMEOUT) as response, open(tmp, "wb") as out:
                announced = response.headers.get("Content-Length")
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    if digest:
                        digest.update(chunk)
        except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, a full disk
            raise UserError(f"cannot download {what} from {remote.url} ({first_line(e)}); {fix}") from None
        if announced and announced.isdigit() and received != int(announced):
            raise UserError(f"cannot download {what} from {remote.url} (the transfer stopped after {received} "
                            f"of {announced} bytes); {fix}")
        if remote.size is not None and received != remote.size:
            raise UserError(f"the download of {what} from {remote.url} has {received} bytes, expected "
                            f"{remote.size} (a changed or damaged file); {fix}")
        if digest and digest.hexdigest() != expected.lower():
            raise UserError(f"the download of {what} from {remote.url} has {algorithm} {digest.hexdigest()}, "
                            f"expected {expected} (a changed or damaged file); {fix}")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _extract(archive: Path, tree: Path, what: str, url: str, fix: str) -> None:
    """A zip or tar file (gz, bz2, xz) extracted into `tree`, no member outside it."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tree)  # zipfile drops absolute paths and '..'
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tree, filter="data")  # refuses links and paths that leave `tree`
        else:
            raise UserError(f"the download of {what} from {url} is neither a zip nor a tar archive; {fix}")
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot extract the archive of {what} from {url} ({first_line(e)}); {fix}") from None


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
