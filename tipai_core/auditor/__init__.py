"""The auditor A_s: image–text backbones, zero-shot and trained heads, seam quality, data and metrics.

Importing this package loads no model and imports neither open_clip, transformers nor lpips.
"""

from __future__ import annotations

from .auditor import Auditor, AuditResult
from .backbones import CONFIG_DIR, TINY_ARCH, load_backbone, load_hf_clip, load_open_clip
from .heads import AuditorHeads, load_heads, save_heads
from .seam import SeamQuality
from .zero_shot import PolicyClasses

__all__ = [
    "AuditResult",
    "Auditor",
    "AuditorHeads",
    "CONFIG_DIR",
    "PolicyClasses",
    "SeamQuality",
    "TINY_ARCH",
    "load_backbone",
    "load_heads",
    "load_hf_clip",
    "load_open_clip",
    "save_heads",
]
