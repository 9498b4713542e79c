"""ComfyUI glue for TiPAI (V3 API). No algorithm lives here: every node gathers its inputs,
converts ComfyUI types to tipai_core types and calls the library."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .registry import NODES


class TiPAIExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
