"""Run many independent configurations in parallel, with a content-addressed result cache.

* **Executors.** ``"serial"`` (in-process, for tests and ``--jobs 1``), ``"process"``
  (:class:`concurrent.futures.ProcessPoolExecutor` on the local cores, ``--jobs N``,
  default ``os.cpu_count()``), ``"ray"`` (the same tasks as Ray remote functions on the
  cluster that ``ray.init()`` finds, or a local one; install with ``pip install kvsim[ray]``).
  Results come back in task order; a rich progress bar advances as tasks finish.
* **Cache.** A result is stored as ``<cache_dir>/<key[:2]>/<key>.json`` where ``key`` is
  the SHA-256 of the canonical JSON of everything that determines it (hardware and model
  spec dumps, method and params, trace identity, simulator config, calibration, kvsim
  version and a digest of its sources: see :func:`cache_key`, :func:`source_digest`). Writes are atomic (temp file + ``os.replace``), so
  parallel workers may share a cache dir. A rerun of the same sweep reads every result back.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from kvsim.errors import ConfigError
from kvsim.fileio import OutputError, staged
from kvsim.jsonutil import json_default

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("process", "serial", "ray")


def default_cache_dir() -> Path:
    """``$KVSIM_SWEEP_CACHE`` or ``~/.cache/kvsim/sweeps``."""
    env = os.environ.get("KVSIM_SWEEP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kvsim" / "sweeps"


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces); tuples become lists, floats repr-exact."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(o: Any) -> Any:
    try:
        return json_default(o, pydantic_mode="json")
    except TypeError:
        raise TypeError(f"cannot hash a {type(o).__name__} into a cache key") from None


@lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of kvsim's Python sources: part of every cache key, so that a code change (not only
    a version bump) invalidates cached results."""
    root = Path(__file__).resolve().parent.parent  # the kvsim package
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(inputs: dict) -> str:
    """SHA-256 hex digest of the canonical JSON of ``inputs``."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


@dataclass(frozen=True)
class ResultCache:
    """JSON results on disk keyed by :func:`cache_key`; ``directory=None`` disables caching."""

    directory: Path | None

    def path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.directory is None:
            return None
        try:
            return json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None  # missing or torn: recompute

    def put(self, key: str, value: dict) -> None:
        """Store ``value`` atomically (temp file + ``os.replace``). A file-system failure
        raises ``OSError`` with the path as ``filename`` (not a KvsimError, which a
        configuration would record as its own error): the CLI prints one line naming it."""
        if self.directory is None:
            return
        p = self.path(key)
        try:
            with staged(p) as tmp:
                tmp.write_text(canonical_json(value))
        except OutputError as err:
            raise OSError(errno.EIO, f"{err} (--cache-dir)", str(p)) from None


def cached(cache: ResultCache, inputs: dict, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """``(value, hit)``: the cached value for ``inputs``, or ``compute()`` stored under its key."""
    key = cache_key(inputs)
    hit = cache.get(key)
    if hit is not None:
        return hit, True
    value = compute()
    cache.put(key, value)
    return value, False


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], *, jobs: int | None = None, executor: str = "process",
              progress: bool = True, description: str = "sweep") -> list[R]:
    """``[fn(t) for t in tasks]`` on the chosen executor; results in task order.

    ``fn`` and the tasks must be picklable (a module-level function and plain data) for the
    process and Ray executors. ``jobs`` defaults to ``os.cpu_count()``; one job or one task
    runs in-process.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}'; choices: {', '.join(EXECUTORS)}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if executor == "ray":
        return _run_ray(fn, tasks, progress, description)
    if executor == "serial" or jobs == 1 or len(tasks) <= 1:
        with _progress(progress, description, len(tasks)) as advance:
            out = []
            for t in tasks:
                out.append(fn(t))
                advance()
            return out
    results: list[Any] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool, \
            _progress(progress, description, len(tasks)) as advance:
        futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            advance()
    return results


def _run_ray(fn: Callable[[T], R], tasks: Sequence[T], progress: bool, description: str) -> list[R]:
    try:
        import ray  # type: ignore[import-not-found]  # lazy: optional extra [ray]
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'kvsim[ray]'") from None
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(fn)
    refs = [remote.remote(t) for t in tasks]
    index = {r: i for i, r in enumerate(refs)}
    results: list[Any] = [None] * len(tasks)
    pending = list(refs)
    with _progress(progress, description, len(tasks)) as advance:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                results[index[r]] = ray.get(r)
                advance()
    return results


class _progress:
    """Context manager yielding ``advance()``: a rich progress bar on stderr, or a no-op."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total
        self._bar = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        # lazy: rich only when a progress bar is shown
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=False)
        self._bar.start()
        tid = self._bar.add_task(self.description, total=self.total)
        return lambda: self._bar.advance(tid)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
