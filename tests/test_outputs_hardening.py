"""Output paths: one-line errors, atomic all-or-nothing writes, never touching files kvsim did not write.

Commands run in-process through ``kvsim.cli.main`` (the real error/signal handling);
disk full is simulated by making staging raise ENOSPC, a read-only directory by making
the test write raise EACCES (tests run as root, where chmod does not stop writes).
"""

import errno
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

import kvsim.fileio as fileio
from kvsim.cli import main

SIM = ["simulate", "--trace", "synthetic-poisson", "-n", "12"]
PLAN = ["plan", "--executor", "serial", "--no-progress", "--num-requests", "12", "--no-cache"]
COMMITTED = Path(__file__).resolve().parent.parent / "kvsim" / "validate" / "results" / "cpu-tiny-llama.json"


def run(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """``kvsim ARGS`` in-process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["kvsim", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    err = capsys.readouterr().err
    return code, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def fail_staging(monkeypatch, when, err=errno.ENOSPC):
    """Make staging a file whose name satisfies ``when(name)`` raise ``err``."""
    real = fileio._stage

    def stage(directory, name, data):
        if when(name):
            raise OSError(err, os.strerror(err))
        return real(directory, name, data)

    monkeypatch.setattr(fileio, "_stage", stage)


def read_only(monkeypatch, directory: Path) -> None:
    """``directory`` behaves read-only: chmod where that works, else (root) creating files there fails."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return
    real = fileio.tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve() == directory.resolve():
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)


# ---- simulate --out / --report ------------------------------------------------------------


def test_simulate_empty_out_is_rejected(capsys, monkeypatch, tmp_path):
    """`simulate --out ''` is an error and writes nothing into the current directory."""
    monkeypatch.chdir(tmp_path)
    one_line_error(*run(capsys, monkeypatch, *SIM, "--out", ""), "--out", "empty path")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--out", "--report"])
def test_simulate_wrong_kind_of_path(capsys, monkeypatch, tmp_path, flag):
    """--out naming a file, --report naming a directory: one line naming the path, exit 1."""
    target = tmp_path / "x"
    target.write_text("keep") if flag == "--out" else target.mkdir()
    one_line_error(*run(capsys, monkeypatch, *SIM, flag, str(target)), str(target))
    assert (target.read_text() == "keep") if flag == "--out" else target.is_dir()


def test_simulate_read_only_out(capsys, monkeypatch, tmp_path):
    """--out into a read-only directory: one-line error naming it, checked before simulating."""
    ro = tmp_path / "ro"
    read_only(monkeypatch, ro)
    monkeypatch.setattr("kvsim.sim.replica.simulate", lambda *a, **k: pytest.fail("simulated before checking --out"))
    one_line_error(*run(capsys, monkeypatch, *SIM, "--out", str(ro)), str(ro))


def test_simulate_disk_full_leaves_previous_run_intact(capsys, monkeypatch, tmp_path):
    """A second run failing with ENOSPC on requests.csv leaves the first run's files exactly as they were."""
    out = tmp_path / "o"
    assert run(capsys, monkeypatch, *SIM, "--out", str(out))[0] == 0
    before = snapshot(out)
    assert {"full/summary.json", "full/requests.csv", "full/timeline.csv", "full/timeline.json", "manifest.json"} <= set(before)
    fail_staging(monkeypatch, lambda name: name == "requests.csv")
    one_line_error(*run(capsys, monkeypatch, *SIM, "--seed", "3", "--out", str(out)), str(out / "full" / "requests.csv"),
                   "no space left")
    assert snapshot(out) == before  # no new summary.json, no temp files


def test_simulate_disk_full_on_rename(capsys, monkeypatch, tmp_path):
    """os.replace failing (ENOSPC) is a one-line error too, and no temporary file is left."""
    out = tmp_path / "o"

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", replace)
    one_line_error(*run(capsys, monkeypatch, *SIM, "--out", str(out)), str(out), "no space left")
    assert not out.exists() or snapshot(out) == {}


def test_simulate_keeps_foreign_files(capsys, monkeypatch, tmp_path):
    """A file kvsim did not write is not overwritten without --force; other foreign files are never touched."""
    out = tmp_path / "o"
    (out / "full").mkdir(parents=True)
    (out / "full" / "summary.json").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    one_line_error(*run(capsys, monkeypatch, *SIM, "--out", str(out)), str(out / "full" / "summary.json"), "--force")
    assert (out / "full" / "summary.json").read_text() == "mine"
    assert run(capsys, monkeypatch, *SIM, "--out", str(out), "--force")[0] == 0
    assert json.loads((out / "full" / "summary.json").read_text())["method"] == "full"
    assert run(capsys, monkeypatch, *SIM, "--method", "kivi", "--out", str(out))[0] == 0
    assert not (out / "full").exists()  # the previous run's files go: one run per directory
    assert (out / "kivi" / "summary.json").is_file() and (out / "notes.txt").read_text() == "mine too"


def test_simulate_report_disk_full_keeps_old_report(capsys, monkeypatch, tmp_path):
    """--report is written atomically: a failed write leaves the old file whole."""
    rep = tmp_path / "r.html"
    rep.write_text("old report")
    fail_staging(monkeypatch, lambda name: name == "r.html")
    one_line_error(*run(capsys, monkeypatch, *SIM, "--report", str(rep)), str(rep))
    assert rep.read_text() == "old report"


# ---- plan --out / --cache-dir, report ----------------------------------------------------------


def test_plan_keeps_files_it_did_not_write(capsys, monkeypatch, tmp_path):
    """The reproducer: p/configs/mine.json survives `kvsim plan --out p`; --force replaces it."""
    p = tmp_path / "p"
    (p / "configs").mkdir(parents=True)
    (p / "configs" / "mine.json").write_text("{}")
    one_line_error(*run(capsys, monkeypatch, *PLAN, "--out", str(p)), str(p / "configs" / "mine.json"), "--force")
    assert (p / "configs" / "mine.json").read_text() == "{}"
    assert not (p / "plan.json").exists()
    code, err = run(capsys, monkeypatch, *PLAN, "--out", str(p), "--force")
    assert code == 0, err
    assert [x.name for x in (p / "configs").iterdir()] == ["000-a100-80g_full.json"]


def test_plan_rerun_replaces_only_its_own_files(capsys, monkeypatch, tmp_path):
    """A rerun with fewer configurations removes the stale config files kvsim wrote, and nothing else."""
    p = tmp_path / "p"
    assert run(capsys, monkeypatch, *PLAN, "--method", "full,kivi", "--out", str(p))[0] == 0
    assert len(list((p / "configs").glob("*.json"))) == 2
    (p / "notes.md").write_text("mine")
    assert run(capsys, monkeypatch, *PLAN, "--out", str(p))[0] == 0
    assert len(list((p / "configs").glob("*.json"))) == 1
    assert (p / "notes.md").read_text() == "mine"


def test_plan_failed_rerun_keeps_previous_report(capsys, monkeypatch, tmp_path):
    """A rerun that fails on a full disk leaves plan.json, configs and report.html of the previous run whole."""
    p = tmp_path / "p"
    assert run(capsys, monkeypatch, *PLAN, "--out", str(p))[0] == 0
    before = snapshot(p)
    fail_staging(monkeypatch, lambda name: name == "report.html")
    one_line_error(*run(capsys, monkeypatch, *PLAN, "--seed", "5", "--out", str(p)), str(p / "report.html"), "no space left")
    assert snapshot(p) == before


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_plan_output_dir_is_a_file(capsys, monkeypatch, tmp_path, flag):
    """plan --out/--cache-dir naming an existing file: one-line error naming it, before any simulation."""
    f = tmp_path / "f"
    f.write_text("keep")
    args = [a for a in PLAN if a != "--no-cache"] if flag == "--cache-dir" else PLAN
    monkeypatch.setattr("kvsim.plan.search.run_tasks", lambda *a, **k: pytest.fail("ran before checking the path"))
    one_line_error(*run(capsys, monkeypatch, *args, flag, str(f)), flag, str(f))
    assert f.read_text() == "keep"


def test_plan_cache_disk_full(capsys, monkeypatch, tmp_path):
    """A full disk while storing a cached result: one line naming the cache file."""
    cache = tmp_path / "cache"
    fail_staging(monkeypatch, lambda name: name.endswith(".json"))
    args = [a for a in PLAN if a != "--no-cache"]
    one_line_error(*run(capsys, monkeypatch, *args, "--cache-dir", str(cache)), str(cache), "no space left")


def test_report_errors_and_atomicity(capsys, monkeypatch, tmp_path):
    """`kvsim report`: --out naming a directory is one line; a full disk keeps the old report.html."""
    p = tmp_path / "p"
    assert run(capsys, monkeypatch, *PLAN, "--out", str(p))[0] == 0
    one_line_error(*run(capsys, monkeypatch, "report", str(p), "--out", str(tmp_path)), str(tmp_path))
    old = (p / "report.html").read_bytes()
    fail_staging(monkeypatch, lambda name: name == "report.html")
    one_line_error(*run(capsys, monkeypatch, "report", str(p)), str(p / "report.html"))
    assert (p / "report.html").read_bytes() == old
    monkeypatch.undo()
    (p / "report.html").write_text("my own")
    (p / fileio.MANIFEST).write_text(json.dumps({"files": ["plan.json"]}))
    one_line_error(*run(capsys, monkeypatch, "report", str(p)), "not written by kvsim")
    assert (p / "report.html").read_text() == "my own"


# ---- validate run / calibrate -------------------------------------------------------------------


def test_validate_run_checks_out_before_measuring(capsys, monkeypatch, tmp_path):
    """validate run --out into a read-only directory fails at once, without a minute of measurements."""
    ro = tmp_path / "ro"
    read_only(monkeypatch, ro)
    monkeypatch.setattr("kvsim.commands.validate.run_benchmarks", lambda *a, **k: pytest.fail("measured before checking --out"))
    one_line_error(*run(capsys, monkeypatch, "validate", "run", "--quick", "--out", str(ro / "r.json")), str(ro))
    one_line_error(*run(capsys, monkeypatch, "validate", "run", "--quick", "--out", str(tmp_path)), str(tmp_path))


def test_validate_calibrate_companion_hw_yaml(capsys, monkeypatch, tmp_path):
    """calibrate --out X.yaml refuses to replace an X.hw.yaml kvsim did not write (unless --force) and says
    when it replaces its own; a read-only target is one line."""
    shutil.copy(COMMITTED, tmp_path / "res.json")
    out = tmp_path / "X.yaml"
    (tmp_path / "X.hw.yaml").write_text("kind: gpu  # mine\n")
    args = ["validate", "calibrate", "--from", str(tmp_path / "res.json"), "--out", str(out)]
    one_line_error(*run(capsys, monkeypatch, *args), str(tmp_path / "X.hw.yaml"), "--force")
    assert (tmp_path / "X.hw.yaml").read_text() == "kind: gpu  # mine\n" and not out.exists()
    assert run(capsys, monkeypatch, *args, "--force")[0] == 0
    assert (tmp_path / "X.hw.yaml").read_text().startswith("# Local device spec written by `kvsim validate`")
    monkeypatch.setattr(sys, "argv", ["kvsim", *args])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    stdout = capsys.readouterr().out
    assert "X.hw.yaml (replaced the previous one)" in stdout
    ro = tmp_path / "ro"
    read_only(monkeypatch, ro)
    one_line_error(*run(capsys, monkeypatch, "validate", "calibrate", "--from", str(tmp_path / "res.json"),
                        "--out", str(ro / "c.yaml")), str(ro))


# ---- signals ----------------------------------------------------------------------------------------


def test_ctrl_c_prints_interrupted_and_keeps_earlier_results(capsys, monkeypatch, tmp_path):
    """Ctrl-C (a real SIGINT) mid-run: `error: interrupted`, exit 130, the previous --out untouched."""
    from kvsim.sim import replica

    real = replica.simulate
    out = tmp_path / "o"
    assert run(capsys, monkeypatch, *SIM, "--out", str(out))[0] == 0
    before = snapshot(out)

    def interrupted(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr("kvsim.sim.replica.simulate", interrupted)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # SIG_IGN when pytest runs as a background job
    try:
        code, err = run(capsys, monkeypatch, *SIM, "--seed", "2", "--out", str(out))
        assert code == 130 and err.strip() == "error: interrupted"
        assert snapshot(out) == before
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # main() restored it
        # a background job (`kvsim ... &`) inherits SIGINT ignored: the terminal's Ctrl-C must not stop it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        monkeypatch.setattr("kvsim.sim.replica.simulate", lambda *a, **k: (interrupted(), real(*a, **k))[1])
        code, err = run(capsys, monkeypatch, *SIM, "--seed", "3", "--out", str(tmp_path / "bg"))
        assert code == 0, err
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)


def test_sigterm_during_trace_fetch_removes_part_file(capsys, monkeypatch, tmp_path):
    """SIGTERM while downloading: the .part file is removed, `error: terminated`, exit 143."""
    seen = []

    def download(url, out, timeout_s, progress):
        out.write(b"partial")
        seen.extend(p.name for p in tmp_path.iterdir())
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("kvsim.traces.fetch._download", download)
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or what an earlier test's library (Ray) left
    code, err = run(capsys, monkeypatch, "trace", "fetch", "burstgpt", "--dest", str(tmp_path), "--url", "file:///x")
    assert any(n.endswith(".part") for n in seen)  # it existed mid-download
    assert code == 143 and err.strip().endswith("error: terminated")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # main() restored it


# ---- single files the user names: a file kvsim did not write is not replaced ------------------------


def test_single_file_outputs_never_replace_a_users_file(capsys, monkeypatch, tmp_path):
    """simulate --report, report --out and validate calibrate --out replace an existing file only
    when kvsim wrote it (a page with kvsim's generator tag, a calibration YAML) or with --force;
    the user's file is left byte for byte, checked before the work (one line, exit 1)."""
    mine = tmp_path / "mine.html"
    mine.write_text("precious\n")
    one_line_error(*run(capsys, monkeypatch, *SIM, "--report", str(mine)), "not a page kvsim wrote", "--force")
    assert mine.read_text() == "precious\n"
    page = tmp_path / "r.html"
    for _ in range(2):  # absent, then kvsim's own page: both written
        assert run(capsys, monkeypatch, *SIM, "--report", str(page), "--self-contained")[0] == 0
    assert run(capsys, monkeypatch, *SIM, "--report", str(mine), "--self-contained", "--force")[0] == 0
    assert mine.read_text().startswith("<!DOCTYPE html>")

    plan_dir = tmp_path / "p"
    assert run(capsys, monkeypatch, *PLAN, "--out", str(plan_dir))[0] == 0
    other = tmp_path / "notes.html"
    other.write_text("my notes\n")
    one_line_error(*run(capsys, monkeypatch, "report", str(plan_dir), "--out", str(other), "--self-contained"),
                   "not a page kvsim wrote")
    assert other.read_text() == "my notes\n"

    shutil.copy(COMMITTED, tmp_path / "res.json")
    cal = tmp_path / "cal.yaml"
    cal.write_text("efficiency: mine\n")
    args = ["validate", "calibrate", "--from", str(tmp_path / "res.json"), "--out", str(cal)]
    one_line_error(*run(capsys, monkeypatch, *args), "not written by kvsim validate", "--force")
    assert cal.read_text() == "efficiency: mine\n" and not (tmp_path / "cal.hw.yaml").exists()
    cal.unlink()
    for _ in range(2):  # absent, then its own calibration: both written
        assert run(capsys, monkeypatch, *args)[0] == 0
    assert cal.read_text().startswith("kind: calibration\n")


def test_outputs_get_the_umask_mode_not_mkstemp_0600(tmp_path):
    """A new output file gets 0o666 less the umask, like open(path, "w") (staging with mkstemp
    made every output 0600: a report another user could not read); a replaced file keeps its mode."""
    old = os.umask(0o022)
    try:
        p = fileio.atomic_write(tmp_path / "a.txt", "x")
        assert p.stat().st_mode & 0o777 == 0o644  # 0o666 & ~0o022
        os.chmod(p, 0o600)
        fileio.atomic_write(p, "y")
        assert p.stat().st_mode & 0o777 == 0o600 and p.read_text() == "y"
        os.umask(0o077)
        assert fileio.atomic_write(tmp_path / "b.txt", "x").stat().st_mode & 0o777 == 0o600  # 0o666 & ~0o077
    finally:
        os.umask(old)


# ---- usage errors: one line, choices in any case ---------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["list", "hardwar"], "Invalid value for 'what': 'hardwar' is not one of"),
    (["simulate", "--preemption", "swapp"], "Invalid value for '--preemption'"),
    (["estimate", "--contxt", "5"], "No such option: --contxt"),
])
def test_usage_errors_are_one_line_with_the_command_to_ask(capsys, monkeypatch, args, needle):
    """click's Usage/Try/Error block becomes one `error:` line naming the command's --help; exit 2
    (click's code for usage errors); no pydantic 'Value error,' prefix."""
    code, err = run(capsys, monkeypatch, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert f"(see `kvsim {args[0]} --help`)" in lines[0] and "Value error" not in lines[0]


def test_choices_and_trace_names_in_any_case(capsys, monkeypatch):
    """Enum choices (--preemption Swap, list Hardware) and trace names (Synthetic-Poisson) are taken
    in any case, as hardware, model and method names are."""
    assert run(capsys, monkeypatch, "list", "Hardware")[0] == 0
    assert run(capsys, monkeypatch, "simulate", "--preemption", "Swap", "--trace", "Synthetic-Poisson:rate=2,n=4")[0] == 0
    from kvsim.traces import load_trace

    assert len(load_trace("Synthetic-Fixed", num_requests=3)) == 3
