"""TiPAI for ComfyUI: guarded, auditor-judged local repair during sampling.

ComfyUI imports this file and calls ``comfy_entrypoint()`` (V3 API). Nothing here imports
ComfyUI or loads a model at import time, so the package can be imported anywhere; the nodes
are imported only when ComfyUI asks for them.
"""

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]

WEB_DIRECTORY = "./web"  # the frontend extension that shows each run's report on its node


async def comfy_entrypoint():
    from .nodes import TiPAIExtension

    return TiPAIExtension()
