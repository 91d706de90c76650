"""Download the full BurstGPT trace into the kvsim cache, verified, atomically.

The file is streamed to a temporary file in the destination directory, its size and
sha256 are checked, and only then is it renamed into place with :func:`os.replace`
(atomic on POSIX and Windows within one directory). Any failure removes the temporary
file and raises :class:`~kvsim.errors.TraceError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kvsim.errors import TraceError

#: Release asset of HPMLL/BurstGPT v1.1 (README: "There are currently 4 files in Release v1.1").
BURSTGPT_URL = "https://github.com/HPMLL/BurstGPT/releases/download/v1.1/BurstGPT_1.csv"
#: From the Git LFS pointer of data/BurstGPT_1.csv at tag v1.1 (commit 5d93d82).
BURSTGPT_SHA256 = "4bb3783693d0a435686fbfc885615d2349bd067239079fa4b749f2e679e12122"
BURSTGPT_SIZE = 52_283_111  # bytes
BURSTGPT_FILE = "BurstGPT_1.csv"

_CHUNK = 1 << 20  # bytes per read


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """kvsim's data cache: ``cache_dir``, else ``$KVSIM_CACHE_DIR``, else ``~/.cache/kvsim``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("KVSIM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kvsim"


def burstgpt_cache_path(cache_dir: Path | str | None = None) -> Path:
    """Where ``fetch_burstgpt`` puts (and ``--trace burstgpt`` looks for) BurstGPT_1.csv."""
    return cache_root(cache_dir) / "burstgpt" / BURSTGPT_FILE


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


#: longest network timeout accepted (one day; the socket layer overflows on larger ones)
MAX_TIMEOUT_S = 86400.0


def check_timeout(timeout_s: object) -> None:
    """A network timeout in (0, MAX_TIMEOUT_S] seconds, else a one-line TraceError."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise TraceError(f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {timeout_s}")


def _download(url: str, out, timeout_s: float, progress: Callable[[int, int | None], None] | None) -> tuple[int, str, int | None]:
    """Stream ``url`` into the open binary file ``out``; returns (bytes, sha256, Content-Length)."""
    h = hashlib.sha256()
    n = 0
    req = urllib.request.Request(url, headers={"User-Agent": "kvsim"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        while True:
            block = resp.read(_CHUNK)
            if not block:
                break
            out.write(block)
            h.update(block)
            n += len(block)
            if progress is not None:
                progress(n, expected)
    return n, h.hexdigest(), expected


def fetch_burstgpt(
    dest_dir: Path | str | None = None,
    *,
    url: str = BURSTGPT_URL,
    sha256: str | None = BURSTGPT_SHA256,
    size: int | None = BURSTGPT_SIZE,
    timeout_s: float = 60.0,
    filename: str = BURSTGPT_FILE,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``BurstGPT_1.csv`` (52,283,111 B) and verify it.

    Parameters
    ----------
    dest_dir : directory to write to (created if missing); default
        ``$KVSIM_CACHE_DIR/burstgpt`` (``~/.cache/kvsim/burstgpt``), where
        ``load_trace("burstgpt")`` looks.
    url : where to download from (http, https or file URL).
    sha256 : expected hex digest, or None to skip the check.
    size : expected size in bytes, or None to skip the check.
    timeout_s : socket timeout per blocking operation, seconds.
    filename : name of the file written in ``dest_dir``.
    force : download even when a verified copy is already there.
    progress : called as ``progress(bytes_so_far, total_or_None)`` after each chunk.

    Returns
    -------
    Path of the verified file.

    Raises
    ------
    TraceError : offline, HTTP error, timeout, cut-off transfer, size or checksum mismatch,
        or a file-system error; no partial file is left behind.
    """
    check_timeout(timeout_s)
    dest = Path(dest_dir).expanduser() if dest_dir is not None else burstgpt_cache_path().parent
    target = dest / filename
    if (
        not force
        and target.is_file()
        and (size is None or target.stat().st_size == size)
        and (sha256 is None or _sha256_of(target) == sha256.lower())
    ):
        return target  # already downloaded and verified
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest)
    except OSError as err:
        raise TraceError(f"cannot write to {dest}: {err.strerror or err}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            n, digest, header_len = _download(url, out, timeout_s, progress)
            out.flush()
            os.fsync(out.fileno())
        if header_len is not None and n != header_len:
            raise TraceError(
                f"download of {url} was cut off: got {n} of {header_len} bytes (Content-Length); nothing written"
            )
        if size is not None and n != size:
            raise TraceError(f"download of {url} has {n} bytes, expected {size}; nothing written")
        if sha256 is not None and digest != sha256.lower():
            raise TraceError(f"sha256 mismatch for {url}: got {digest}, expected {sha256}; nothing written")
        os.replace(tmp, target)
    except TraceError:
        tmp.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as err:
        tmp.unlink(missing_ok=True)
        raise TraceError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        tmp.unlink(missing_ok=True)
        reason = err.reason if not isinstance(err.reason, OSError) else (err.reason.strerror or err.reason)
        reason = " ".join(str(reason).split())
        raise TraceError(f"cannot reach {url}: {reason} (offline? use --url or copy the file to {target})") from None
    except TimeoutError:
        tmp.unlink(missing_ok=True)
        raise TraceError(f"download of {url} timed out after {timeout_s:g} s without data; nothing written") from None
    except (OSError, ValueError, http.client.HTTPException) as err:  # reset, disk full, bad URL
        tmp.unlink(missing_ok=True)
        detail = " ".join(str(err).split()) or type(err).__name__
        raise TraceError(f"download of {url} failed: {detail}; nothing written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
