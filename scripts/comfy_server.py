"""Start a real ComfyUI server on 127.0.0.1 and talk to it over HTTP (standard library only).

Used by the host tests and by the main job (scripts/demo.py). The server always runs on a
free loopback port, its log goes to a file, and it is stopped by its PID (its whole process
group) whatever happens, so no stray server outlives the caller:

- ``stop()`` (and leaving ``with ComfyServer(...)``) ends the group: SIGTERM, then SIGKILL;
- while a server runs, SIGTERM to the caller raises ``KeyboardInterrupt`` in its main thread (when
  nobody else handles SIGTERM), so ``finally`` blocks, pytest's teardown and ``with`` exits all run;
- an ``atexit`` hook stops any server still running when the interpreter exits;
- on Linux the server also gets SIGTERM if the thread that started it dies (``PR_SET_PDEATHSIG``),
  which covers a caller killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path


class ComfyError(RuntimeError):
    """The server refused a prompt or its execution failed; the message carries ComfyUI's words."""


_LIVE: set["ComfyServer"] = set()
_HANDLER_INSTALLED = False


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _watch_signals() -> None:
    """SIGTERM -> KeyboardInterrupt while a server runs (main thread only, and only over the default)."""
    global _HANDLER_INSTALLED
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        _HANDLER_INSTALLED = True


def _unwatch_signals() -> None:
    global _HANDLER_INSTALLED
    if (
        _HANDLER_INSTALLED
        and not _LIVE
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is _sigterm_to_interrupt
    ):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _HANDLER_INSTALLED = False


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` for Popen: the child gets ``sig`` when the thread that started it dies (Linux
    ``PR_SET_PDEATHSIG``). None where that is not available. libc is looked up here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """``python main.py`` in ``comfy_dir`` (ComfyUI's code). ``base_directory`` is the ComfyUI instance it
    serves (``models/``, ``custom_nodes/``; ``scripts/host.py`` makes one per checkout); ``workdir`` holds
    this run's log, input, output, temp and user folders and its database."""

    def __init__(
        self,
        python: Path,
        comfy_dir: Path,
        workdir: Path,
        extra_args: list[str] | None = None,
        base_directory: Path | None = None,
    ):
        self.python, self.comfy_dir, self.workdir = Path(python), Path(comfy_dir), Path(workdir)
        self.base_directory = Path(base_directory) if base_directory is not None else None
        self.extra_args = list(extra_args or [])
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "comfyui.log"
        self.output_dir = self.workdir / "output"
        self.input_dir = self.workdir / "input"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        for d in (self.output_dir, self.input_dir, self.workdir / "temp", self.workdir / "user"):
            d.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [
            str(self.python),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--output-directory",
            str(self.output_dir),
            "--input-directory",
            str(self.input_dir),
            "--temp-directory",
            str(self.workdir / "temp"),
            "--user-directory",
            str(self.workdir / "user"),
            "--database-url",
            f"sqlite:///{self.workdir / 'user' / 'comfyui.db'}",
            "--disable-auto-launch",
        ]
        if self.base_directory is not None:
            cmd += ["--base-directory", str(self.base_directory)]
        cmd += self.extra_args
        self._log = open(self.log_path, "w")  # noqa: SIM115 (open for the server's life; closed by stop())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        _watch_signals()
        _LIVE.add(self)
        try:
            # Own process group, so stop() takes down anything the server spawned too.
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.comfy_dir,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
            deadline = time.time() + timeout
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise ComfyError(
                        f"ComfyUI exited with code {self.proc.returncode} while starting:\n{self.log_tail()}"
                    )
                try:
                    self.get_json("/object_info", timeout=5)
                    return self
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    time.sleep(0.5)
            raise ComfyError(f"ComfyUI did not answer /object_info within {timeout:.0f} s:\n{self.log_tail()}")
        except BaseException:  # a failed start, or SIGTERM / Ctrl-C while waiting: no server is left behind
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        """End the server's process group: SIGTERM, then SIGKILL after 15 s, or at once if this wait is
        itself interrupted (a second Ctrl-C or SIGTERM still leaves no server behind)."""
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
                except BaseException as exc:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if not isinstance(exc, (subprocess.TimeoutExpired, ProcessLookupError)):
                        raise
        finally:
            _LIVE.discard(self)
            _unwatch_signals()
            if getattr(self, "_log", None) and not self._log.closed:
                self._log.close()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # --- HTTP ---
    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def post_json(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
                return json.loads(body) if body else None
        except urllib.error.HTTPError as exc:
            raise ComfyError(f"POST {path} -> HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None

    def queue(self, graph: dict) -> str:
        return self.post_json("/prompt", {"prompt": graph, "client_id": uuid.uuid4().hex})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history until the prompt is done; return its history entry or raise ComfyError."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get_json(f"/history/{prompt_id}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") == "success":
                    return entry
                if status.get("status_str") == "error":
                    raise ComfyError(f"prompt {prompt_id} failed: {json.dumps(status.get('messages'))[:4000]}")
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, graph: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(graph), timeout)

    def image_bytes(self, image: dict) -> bytes:
        """The PNG that a SaveImage/PreviewImage output entry points to, through GET /view."""
        q = urllib.parse.urlencode(
            {
                "filename": image["filename"],
                "subfolder": image.get("subfolder", ""),
                "type": image.get("type", "output"),
            }
        )
        return self.get_bytes(f"/view?{q}")
