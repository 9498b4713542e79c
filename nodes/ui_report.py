"""Showing a run's report on a node after the node itself has finished.

The TiPAI KSampler returns its report as UI data when it finishes. The Patch Model cannot: it
returns a patched MODEL before any sampling, and the run happens later inside another node
(KSampler, SamplerCustomAdvanced, a detailer). So when that run ends, the pack sends the frontend
an ``executed`` message for the Patch Model's own node, as ComfyUI does for a finished node: the
frontend then shows the overlay image on it, and the pack's web extension (``web/tipai_report.js``)
shows the text. Without a server (a script, the in-process tests) there is nobody to tell.
"""

from __future__ import annotations

import logging
import os
import uuid

import folder_paths
import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

TEXT_KEY = "tipai_text"  # the UI key web/tipai_report.js reads


def save_preview(images: torch.Tensor, prefix: str) -> list[dict]:
    """ComfyUI ``[B,H,W,3]`` images as PNGs in the temp folder, as the frontend's image entries."""
    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    entries = []
    for img in images:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}.png"
        pixels = (img.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, name))
        entries.append({"filename": name, "subfolder": "", "type": "temp"})
    return entries


def show_on_node(node_id: str | None, output: dict) -> bool:
    """Send ``output`` to the frontend as node ``node_id``'s result; False when no server listens."""
    if node_id is None:
        return False
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    ctx = get_executing_context()
    if server is None or ctx is None or not hasattr(server, "send_sync"):
        return False
    message = {"node": node_id, "display_node": node_id, "output": output, "prompt_id": ctx.prompt_id}
    server.send_sync("executed", message, getattr(server, "client_id", None))
    return True
