"""No server outlives its caller: ComfyServer stops its process group when the caller gets SIGTERM (with
no try/finally of its own), and the server dies with a caller killed outright (SIGKILL).

A fake ComfyUI (a tiny HTTP server that answers /object_info and starts a child of its own) stands in
for the real one, so this runs in a second; tests/host/test_server_signals.py does it for real."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import comfy_server
import pytest

from tests.processes import alive, wait_gone

SCRIPTS = Path(comfy_server.__file__).resolve().parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")

FAKE_MAIN = """
import argparse, http.server, json, subprocess, sys
ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int)
ap.add_argument("--output-directory")
args, _ = ap.parse_known_args()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(args.output_directory + "/../server_child.pid", "w") as f:
    f.write(str(child.pid))

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", args.port), H).serve_forever()
"""

# The caller: starts a server and sleeps, with no try/finally and no `with`: ComfyServer alone must clean up.
CALLER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {scripts!r})
from comfy_server import ComfyServer
server = ComfyServer(sys.executable, Path({fake!r}), Path({work!r})).start(timeout=60)
print(json.dumps({{"server": server.pid}}), flush=True)
time.sleep(600)
"""


@pytest.fixture
def started(tmp_path):
    fake, work = tmp_path / "fake_comfy", tmp_path / "work"
    fake.mkdir()
    (fake / "main.py").write_text(FAKE_MAIN)
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER.format(scripts=str(SCRIPTS), fake=str(fake), work=str(work))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = caller.stdout.readline()
    assert line, caller.stderr.read()
    server = json.loads(line)["server"]
    child = int((work / "server_child.pid").read_text())
    assert alive(server) and alive(child)
    yield caller, server, child
    for pid in (caller.pid, server, child):  # whatever the test left running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    caller.wait(timeout=10)


def test_sigterm_to_the_caller_stops_the_server_and_its_children(started):
    caller, server, child = started
    caller.send_signal(signal.SIGTERM)
    caller.wait(timeout=20)
    assert wait_gone([server, child], 10) == [], "the server (or its child) outlived a SIGTERM'd caller"


def test_the_server_dies_with_a_killed_caller(started):
    caller, server, _ = started
    caller.send_signal(signal.SIGKILL)
    caller.wait(timeout=20)
    assert wait_gone([server], 10) == [], "the server outlived a caller killed with SIGKILL"


def test_stop_is_idempotent_and_restores_the_sigterm_handler(tmp_path):
    fake = tmp_path / "fake_comfy"
    fake.mkdir()
    (fake / "main.py").write_text(FAKE_MAIN)
    before = signal.getsignal(signal.SIGTERM)
    server = comfy_server.ComfyServer(sys.executable, fake, tmp_path / "work").start(timeout=60)
    try:
        assert server.get_json("/object_info") == {}
    finally:
        server.stop()
    server.stop()
    assert server.proc.poll() is not None
    assert signal.getsignal(signal.SIGTERM) == before
    child = int((tmp_path / "work" / "server_child.pid").read_text())
    assert wait_gone([child], 10) == []
