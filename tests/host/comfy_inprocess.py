"""A real ComfyUI imported into the test process: execute API-format graphs without HTTP.

Import order matters (docs/host.md): ``--cpu`` and ``--base-directory`` must be set in
``comfy.cli_args.args`` before anything probes CUDA or imports ``folder_paths`` (which reads the
base directory once, at import), and ``utils.extra_config`` must be imported before ``nodes``,
because nodes.py puts comfy/ first on sys.path and comfy/utils.py would then hide ComfyUI's own
utils/ package.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path


class _NullServer:
    """Just enough of PromptServer for PromptExecutor: nobody listens to its messages."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


class InProcessComfy:
    """ComfyUI's code from ``comfy_code``, serving the instance ``base_directory`` (``models/``,
    ``custom_nodes/``); this run's input, output, temp and user folders go in ``workdir``."""

    def __init__(self, comfy_code: Path, base_directory: Path, workdir: Path):
        comfy_code, base_directory, workdir = Path(comfy_code), Path(base_directory).resolve(), Path(workdir)
        if "folder_paths" in sys.modules:
            raise RuntimeError("folder_paths was imported before InProcessComfy could set the base directory")
        if str(comfy_code) not in sys.path:
            sys.path.insert(0, str(comfy_code))
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        comfy.cli_args.args.base_directory = str(base_directory)
        import folder_paths
        import utils.extra_config  # noqa: F401  (must precede `nodes`, see module docstring)

        if Path(folder_paths.base_path).resolve() != base_directory:
            raise RuntimeError(f"ComfyUI serves {folder_paths.base_path}, not the instance {base_directory}")
        self.output_dir = workdir / "output"
        self.input_dir = workdir / "input"
        for d in (self.output_dir, self.input_dir, workdir / "temp", workdir / "user"):
            d.mkdir(parents=True, exist_ok=True)
        folder_paths.set_output_directory(str(self.output_dir))
        folder_paths.set_input_directory(str(self.input_dir))
        folder_paths.set_temp_directory(str(workdir / "temp"))
        folder_paths.set_user_directory(str(workdir / "user"))

        import execution
        import nodes

        self.import_failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        self.nodes, self.execution = nodes, execution
        self.executor = execution.PromptExecutor(
            _NullServer(), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
        )

    def node_class(self, node_id: str):
        return self.nodes.NODE_CLASS_MAPPINGS[node_id]

    def run(self, graph: dict) -> dict:
        """Validate and execute a graph; return {node_id: ui outputs}. Raises with ComfyUI's own words."""
        prompt_id = uuid.uuid4().hex
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, graph, None))
        if not valid[0]:
            raise RuntimeError(f"invalid prompt: {valid[1]} {valid[3]}")
        self.executor.execute(graph, prompt_id, {}, valid[2])
        if not self.executor.success:
            raise RuntimeError(f"execution failed: {self.executor.status_messages}")
        return self.executor.history_result["outputs"]
