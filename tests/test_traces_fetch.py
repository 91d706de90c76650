"""fetch_burstgpt against a local 127.0.0.1 HTTP server (never the real network), and the CLI."""

from __future__ import annotations

import re

import functools
import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

import kvsim.commands.trace as trace_cli
from kvsim.errors import TraceError
from kvsim.traces import fetch_burstgpt, load_trace
from kvsim.traces.burstgpt import SAMPLE_1

BODY = SAMPLE_1.read_bytes()  # 16,840 bytes stand in for the 52 MB file
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """/good: the body; /short: Content-Length 1000 bytes too large, then close; /slow: stall."""

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path not in ("/good", "/short", "/slow"):
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        extra = 1000 if self.path == "/short" else 0
        self.send_header("Content-Length", str(len(BODY) + extra))
        self.end_headers()
        if self.path == "/slow":
            time.sleep(1.5)
        self.wfile.write(BODY)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(monkeypatch):
    """Base URL of a local HTTP server; proxies disabled so urllib talks to it directly."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.hits = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_good_download_verified_and_loadable(server, tmp_path):
    """A good download lands at dest/BurstGPT_1.csv, identical, with no temp file left."""
    srv, base = server
    path = fetch_burstgpt(tmp_path / "burstgpt", url=f"{base}/good", sha256=SHA, size=len(BODY))
    assert path == tmp_path / "burstgpt" / "BurstGPT_1.csv"
    assert path.read_bytes() == BODY
    assert [p.name for p in path.parent.iterdir()] == ["BurstGPT_1.csv"]
    tr = load_trace("burstgpt", cache_dir=tmp_path)  # found in <cache>/burstgpt/: no fallback notice
    assert len(tr) == 383 and tr.notice is None and tr.source == str(path)
    # a second call finds the verified copy and does not download again
    fetch_burstgpt(tmp_path / "burstgpt", url=f"{base}/good", sha256=SHA, size=len(BODY))
    assert srv.hits == ["/good"]


def test_bad_checksum_leaves_nothing(server, tmp_path):
    """A checksum mismatch raises one line and leaves no file."""
    _, base = server
    with pytest.raises(TraceError, match=r"sha256 mismatch .* expected 0{64}; nothing written$"):
        fetch_burstgpt(tmp_path, url=f"{base}/good", sha256="0" * 64, size=None)
    assert list(tmp_path.iterdir()) == []


def test_cut_off_transfer_leaves_nothing(server, tmp_path):
    """A transfer shorter than its Content-Length raises and leaves no partial file."""
    _, base = server
    with pytest.raises(TraceError, match=rf"cut off: got {len(BODY)} of {len(BODY) + 1000} bytes"):
        fetch_burstgpt(tmp_path, url=f"{base}/short", sha256=None, size=None)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_rejected(server, tmp_path):
    """The expected size is checked even when the checksum is not."""
    _, base = server
    with pytest.raises(TraceError, match=rf"has {len(BODY)} bytes, expected 52283111"):
        fetch_burstgpt(tmp_path, url=f"{base}/good", sha256=None)
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_timeout(server, tmp_path):
    """HTTP 404 and a stalled server raise one-line TraceErrors, nothing written."""
    _, base = server
    with pytest.raises(TraceError, match=r"failed: HTTP 404"):
        fetch_burstgpt(tmp_path, url=f"{base}/missing")
    with pytest.raises(TraceError, match=r"timed out after 0.3 s"):
        fetch_burstgpt(tmp_path, url=f"{base}/slow", sha256=SHA, size=len(BODY), timeout_s=0.3)
    assert list(tmp_path.iterdir()) == []


def test_offline_raises(tmp_path, monkeypatch):
    """A refused connection (nothing listening on the port) raises 'cannot reach'."""
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(TraceError, match=r"^cannot reach http://127.0.0.1:\d+/x: "):
        fetch_burstgpt(tmp_path, url=f"http://127.0.0.1:{port}/x", timeout_s=2)
    assert list(tmp_path.iterdir()) == []


def test_existing_bad_file_is_replaced_atomically(server, tmp_path):
    """A corrupt existing file is re-downloaded; a failed download keeps the old file untouched."""
    _, base = server
    target = tmp_path / "BurstGPT_1.csv"
    target.write_bytes(b"old")
    with pytest.raises(TraceError):
        fetch_burstgpt(tmp_path, url=f"{base}/short", sha256=SHA, size=len(BODY))
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["BurstGPT_1.csv"]
    fetch_burstgpt(tmp_path, url=f"{base}/good", sha256=SHA, size=len(BODY))
    assert target.read_bytes() == BODY


def test_cli_fetch(server, tmp_path, monkeypatch):
    """`trace fetch burstgpt --dest D --url U` prints where it wrote; a bad file raises TraceError."""
    _, base = server
    runner = CliRunner()
    bad = runner.invoke(trace_cli.app, ["fetch", "burstgpt", "--dest", str(tmp_path), "--url", f"{base}/good"])
    assert bad.exit_code == 1 and isinstance(bad.exception, TraceError)  # default sha256 is the real file's
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(trace_cli, "fetch_burstgpt", functools.partial(fetch_burstgpt, sha256=SHA, size=len(BODY)))
    ok = runner.invoke(trace_cli.app, ["fetch", "burstgpt", "--dest", str(tmp_path), "--url", f"{base}/good"])
    assert ok.exit_code == 0, ok.output
    assert f"wrote {tmp_path / 'BurstGPT_1.csv'}" in ok.output
    again = runner.invoke(trace_cli.app, ["fetch", "burstgpt", "--dest", str(tmp_path), "--url", f"{base}/good"])
    assert "already present and verified" in again.output


def test_cli_info_and_list(tmp_path, monkeypatch):
    """`trace info` prints counts, rate and notice; `trace list` names every trace."""
    monkeypatch.setenv("KVSIM_CACHE_DIR", str(tmp_path))
    runner = CliRunner()
    res = runner.invoke(trace_cli.app, ["info", "burstgpt", "--rate", "2"])
    assert res.exit_code == 0, res.output
    assert re.search(r"^requests +383 *$", res.output, re.M)
    assert re.search(r"^mean rate +2 req/s *$", res.output, re.M)  # (383-1)/191 s
    assert re.search(r"^failed dropped +17 *$", res.output, re.M)
    assert re.search(r"^0-prompt dropped +0 *$", res.output, re.M)
    assert "notice: using the bundled 400-row BurstGPT sample" in res.output
    res = runner.invoke(trace_cli.app, ["info", "azure-code", "--json"])
    assert res.exit_code == 0 and '"requests": 8819' in res.output
    res = runner.invoke(trace_cli.app, ["list"])
    assert "mooncake-conversation" in res.output and "synthetic-gamma" in res.output
    bad = runner.invoke(trace_cli.app, ["info", "burstgpt", "--model", "gpt5"])
    assert bad.exit_code == 1 and isinstance(bad.exception, TraceError)
