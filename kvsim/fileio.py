"""Safe output files: atomic writes, all-or-nothing output directories, one-line errors.

Every file kvsim writes goes to a temporary name in its destination directory first and is
renamed into place with :func:`os.replace` (atomic within one directory), so a failed or
interrupted write never leaves a truncated file where a good one was.

An output directory (``simulate --out``, ``plan --out``) is written by :func:`write_tree`:
every file is staged under a temporary name before any is renamed into place, so a failure
while writing (disk full, read-only) leaves the directory as it was. The directory keeps a
manifest (``.kvsim-manifest.json``) of the files kvsim wrote there; only those are replaced
or removed on the next run. A file kvsim did not write is never overwritten or deleted
unless ``force``.

File-system failures raise :class:`OutputError`, a :class:`~kvsim.errors.KvsimError`
whose message names the path, so the CLI prints one line and exits 1.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from kvsim.errors import KvsimError

MANIFEST = ".kvsim-manifest.json"


class OutputError(KvsimError):
    """An output path cannot be written (exists as the wrong kind, read-only, disk full, ...)."""


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so ``finally``/cleanup code runs (exit 143)."""

    exit_code = 128 + signal.SIGTERM


def describe(err: OSError) -> str:
    """``'No space left on device'`` etc.: the OS reason without the repeated path."""
    if err.errno == errno.ENOSPC:
        return "no space left on device"
    text = err.strerror or str(err) or type(err).__name__
    return text[:1].lower() + text[1:]


def _fail(path: Path | str, err: OSError, what: str = "cannot write") -> OutputError:
    return OutputError(f"{what} {path}: {describe(err)}")


def ensure_dir(path: Path | str, flag: str = "") -> Path:
    """Create directory ``path`` (and parents); a one-line error if it is a file or cannot be made."""
    p = Path(path)
    where = f"{flag} {p}" if flag else str(p)
    if str(path) == "":
        raise OutputError(f"{flag or 'output path'}: empty path")
    if p.exists() and not p.is_dir():
        raise OutputError(f"{where}: exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create directory {where}: {describe(err)}") from None
    return p


def check_writable_dir(path: Path | str, flag: str = "") -> Path:
    """Make sure files can be created in directory ``path``: a real test write, so it also holds
    for root and read-only mounts. Call before long work. Folders it had to create for the test
    are removed again (the writers create them), so a run that fails later leaves none behind."""
    missing = []
    q = Path(path)
    while str(q) not in ("", ".") and not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    p = ensure_dir(path, flag)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kvsim-probe-", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise OutputError(f"cannot write to {f'{flag} ' if flag else ''}{p}: {describe(err)}") from None
    finally:
        for made in missing:  # deepest first; (a folder something else filled meanwhile stays)
            try:
                made.rmdir()
            except OSError:
                break
    return p


def check_output_file(path: Path | str, flag: str = "") -> Path:
    """Check that file ``path`` can be written later: non-empty, not a directory, its folder writable."""
    if str(path) == "":
        raise OutputError(f"{flag or 'output path'}: empty path")
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{f'{flag} ' if flag else ''}{p}: is a directory (expected a file name)")
    check_writable_dir(p.parent, flag)
    return p


def _umask() -> int:
    """The process's umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_inputs(path: Path | str, inputs, flag: str) -> None:
    """OutputError when ``path`` is one of this run's input files (``inputs``: paths or names; those that are
    not existing files are skipped): --force replaces a file kvsim did not write, never what the run reads."""
    p = Path(path)
    if not p.exists():
        return
    for i in inputs:
        if i and Path(str(i)).is_file() and p.resolve() == Path(str(i)).resolve():
            raise OutputError(f"{flag} {p}: is an input of this run ({i}); choose another file")


def check_replaceable(path: Path | str, mark: str, flag: str, not_ours: str) -> Path:
    """File ``path`` can be written (:func:`check_output_file`) and is absent or starts with
    ``mark`` (a file this command wrote before); anything else is never replaced:
    ``"{flag} {path}: exists and {not_ours} (not replaced)"``."""
    p = check_output_file(path, flag)
    if p.exists():
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                head = f.read(len(mark))
        except OSError as err:
            raise OutputError(f"{flag} {p}: {describe(err)}") from None
        if head != mark:
            raise OutputError(f"{flag} {p}: exists and {not_ours} (not replaced)")
    return p


def _stage(directory: Path, name: str, data: str | bytes) -> Path:
    """Write ``data`` to a new temporary file in ``directory``; returns its path. The file gets
    the mode an ordinary ``open(path, "w")`` would give it (``0o666`` less the umask), or the
    mode of the file it will replace: ``mkstemp``'s private 0600 would otherwise end up on
    every output (a report another user cannot read)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        try:
            mode = (directory / name).stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path | str, data: str | bytes) -> Path:
    """Write ``path`` whole or not at all (temporary file + :func:`os.replace`)."""
    p = check_output_file(path)
    with staged(p) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


@contextmanager
def staged(path: Path | str) -> Iterator[Path]:
    """``with staged(p) as tmp: write(tmp)``: on success ``tmp`` replaces ``p``; on any
    failure ``tmp`` is removed and ``p`` is untouched (OSError -> :class:`OutputError`)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory (expected a file name)")
    try:
        tmp = _stage(ensure_dir(p.parent), p.name, b"")
    except OSError as err:
        raise _fail(p, err) from None
    try:
        yield tmp
        os.replace(tmp, p)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _fail(p, err) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_manifest(directory: Path | str) -> set[str]:
    """Relative paths kvsim wrote in ``directory`` (empty when there is no manifest). Entries that
    are not plain relative paths inside it (absolute, ``..``, empty) are ignored: a manifest is a
    file in a folder someone may have copied or edited, and kvsim prunes what it lists."""
    try:
        data = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
        return {str(x) for x in data.get("files", []) if _plain_relative(x)}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def _plain_relative(name) -> bool:
    """A manifest entry kvsim could have written: a relative path of plain names (no ``..``, not absolute)."""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and all(part not in ("", ".", "..") for part in p.parts)


def _inside(d: Path, rel: str) -> bool:
    """``d / rel``'s folder, symbolic links followed, is ``d`` or below it (so removing ``d / rel``
    cannot touch anything outside ``d``)."""
    try:
        root, parent = d.resolve(), (d / rel).parent.resolve()
    except OSError:
        return False
    return parent == root or root in parent.parents


def _manifest_text(files: set[str]) -> str:
    return json.dumps({"written_by": "kvsim", "files": sorted(files)}, indent=1) + "\n"


def foreign_files(directory: Path | str, names: set[str] | list[str]) -> list[str]:
    """Those of ``names`` (relative paths) that exist in ``directory`` but kvsim did not write there."""
    d = Path(directory)
    ours = read_manifest(d)
    return sorted(n for n in names if n not in ours and (d / n).exists())


def check_tree(directory: Path | str, names: set[str] | list[str] = (), *, flag: str = "--out", force: bool = False,
               owned_globs: tuple[str, ...] = (), inputs=()) -> Path:
    """Before the work: ``directory`` is (or can be made) a writable directory, none of
    ``names`` nor any file matching ``owned_globs`` (kvsim's namespace there, e.g.
    ``configs/*.json``) is a file kvsim did not write, unless ``force``, and none of ``names``
    is one of the run's ``inputs`` (files it reads: never replaced, even with ``force``)."""
    d = Path(directory)
    if str(directory) == "":
        raise OutputError(f"{flag}: empty path")
    if d.exists() and not d.is_dir():
        raise OutputError(f"{flag} {d}: exists and is not a directory")
    for n in names:
        refuse_inputs(d / n, inputs, flag)
    if not force and d.is_dir():
        ours = read_manifest(d)
        mine = {str(p.relative_to(d)) for g in owned_globs for p in d.glob(g)}
        clash = sorted(n for n in set(names) | mine if n not in ours and (d / n).exists())
        if clash:
            shown = ", ".join(str(d / n) for n in clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
            raise OutputError(f"{flag} {d}: {shown} not written by kvsim; move it away or pass --force to replace it")
    check_writable_dir(d, flag)
    return d


def write_tree(directory: Path | str, files: Mapping[str, str | bytes], *, force: bool = False, flag: str = "--out",
               prune: bool = True, owned_globs: tuple[str, ...] = (), inputs=()) -> list[Path]:
    """Write ``files`` (relative path -> content) into ``directory``, all or nothing.

    Every file is staged under a temporary name first; only when all are written are they
    renamed into place. With ``prune``, files kvsim wrote there before (per the manifest)
    that are not in ``files`` are removed, so the directory holds one run. Files kvsim did
    not write are left alone; one in the way (same name, or matching ``owned_globs``)
    raises :class:`OutputError` unless ``force``. A file of the run's ``inputs`` is neither
    replaced nor removed, whatever ``force`` says (OutputError before anything is written).
    """
    created = not Path(directory).exists()
    d = check_tree(directory, list(files), flag=flag, force=force, owned_globs=owned_globs, inputs=inputs)
    old = read_manifest(d)
    stale = {n for n in old if n not in files} if prune else set()
    if force:
        stale |= {str(p.relative_to(d)) for g in owned_globs for p in d.glob(g)} - set(files)
    for rel in sorted(stale):
        refuse_inputs(d / rel, inputs, flag)
    keep = set() if prune else {n for n in old if (d / n).exists()}
    tmps: dict[str, Path] = {}
    try:
        for rel, data in files.items():
            target = d / rel
            try:
                ensure_dir(target.parent)
                if target.is_dir():
                    raise OutputError(f"{target}: is a directory (expected a file name)")
                tmps[rel] = _stage(target.parent, target.name, data)
            except OSError as err:
                raise _fail(target, err) from None
        try:
            tmps[MANIFEST] = _stage(d, MANIFEST, _manifest_text(set(files) | old | keep))
            os.replace(tmps[MANIFEST], d / MANIFEST)
            del tmps[MANIFEST]
        except OSError as err:
            raise _fail(d / MANIFEST, err) from None
        for rel in list(tmps):
            try:
                os.replace(tmps[rel], d / rel)
            except OSError as err:
                raise OutputError(f"cannot write {d / rel}: {describe(err)} (the directory may hold a partial update)") from None
            del tmps[rel]
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        if created:
            _remove_empty_dirs(d)
        raise
    for rel in sorted(stale):
        if not _inside(d, rel):  # (a folder on its path is a link out of d now: leave it)
            continue
        try:
            (d / rel).unlink(missing_ok=True)
        except OSError:
            pass  # e.g. a directory now; it stays listed
        parent = (d / rel).parent
        while parent != d and d in parent.parents:  # a folder left empty by the pruning goes too
            try:
                parent.rmdir()
            except OSError:
                break  # not empty: something else lives there
            parent = parent.parent
    try:
        with staged(d / MANIFEST) as tmp:
            tmp.write_text(_manifest_text(set(files) | keep), encoding="utf-8")
    except OutputError:
        pass  # the wider manifest written above stays valid
    return [d / rel for rel in files]


def _remove_empty_dirs(d: Path) -> None:
    """Remove ``d`` and its sub-directories if they hold no file (a directory this call made)."""
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:
        pass


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated` so cleanup runs."""
    def _raise(signum, frame):  # noqa: ARG001
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
