"""Fixtures for tests that run the pack inside a real ComfyUI (the host from scripts/host.py).

- ``comfy_inproc``: ComfyUI imported into this process; ``.run(graph)`` executes an API graph.
- ``comfy_server``: a real server on 127.0.0.1 and a free port, stopped by its PID at the end.
- ``tiny_checkpoint``: the random-weight SD1.5 checkpoint, generated into the cached host.

Host tests fail (never skip) when the host is missing: run ``python3 scripts/test.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import host as host_builder  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

CHECKPOINT_NAME = "tipai_tiny_sd15.safetensors"


@pytest.fixture(scope="session")
def host_dir() -> Path:
    path = Path(os.environ.get("TIPAI_HOST") or host_builder.host_dir())
    if not (path / "recipe.json").is_file():
        pytest.fail(f"the ComfyUI test host is not built at {path}; run `python3 scripts/test.py`", pytrace=False)
    if Path(sys.executable).resolve() != host_builder.venv_python(path).resolve() and \
            not Path(sys.prefix).resolve() == (path / "venv").resolve():
        pytest.fail(f"host tests must run in the host's Python ({host_builder.venv_python(path)}); "
                    "run `python3 scripts/test.py`", pytrace=False)
    host_builder.install_pack(path)
    return path


@pytest.fixture(scope="session")
def comfy_dir(host_dir) -> Path:
    return host_dir / "ComfyUI"


@pytest.fixture(scope="session")
def tiny_checkpoint(host_dir, comfy_dir) -> str:
    """Generate (once per recipe) the tiny SD1.5 checkpoint into the host's models/checkpoints."""
    out = comfy_dir / "models" / "checkpoints" / CHECKPOINT_NAME
    subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_checkpoint.py"), str(comfy_dir), str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return CHECKPOINT_NAME


@pytest.fixture(scope="session")
def comfy_server(host_dir, comfy_dir, tiny_checkpoint, tiny_auditor, tmp_path_factory):
    server = ComfyServer(sys.executable, comfy_dir, tmp_path_factory.mktemp("comfy_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfy_inproc(host_dir, comfy_dir, tiny_checkpoint, tmp_path_factory):
    from comfy_inprocess import InProcessComfy

    return InProcessComfy(comfy_dir, tmp_path_factory.mktemp("comfy_inproc"))


@pytest.fixture(scope="session")
def pack(comfy_inproc):
    """This checkout imported as a package (as ComfyUI imports a custom node folder), so tests can
    reach its modules: ``importlib.import_module(pack.__name__ + ".nodes.sampler_hook")``."""
    import importlib.util

    name = "tipai_pack_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack_node_ids(pack) -> list[str]:
    """The node ids the pack itself registers, read from its own extension (not a copy)."""
    import asyncio

    extension = asyncio.run(pack.comfy_entrypoint())
    return [cls.GET_SCHEMA().node_id for cls in asyncio.run(extension.get_node_list())]


TINY_AUDITOR = "tipai_tiny_auditor.safetensors"
TINY_ARCH = "tipai-tiny-vit"


@pytest.fixture(scope="session")
def tiny_auditor(comfy_dir) -> str:
    """The built-in default auditor (random tiny open_clip weights) in the host's models/tipai."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_auditor.py"), str(comfy_dir / "models" / "tipai")],
                   check=True, stdout=subprocess.DEVNULL)
    return TINY_AUDITOR
