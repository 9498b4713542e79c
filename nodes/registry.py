"""Every node the pack registers. Node ids are public API: saved workflows refer to them, so
an id that has shipped is never renamed or removed."""

from __future__ import annotations

import comfy.model_management

from ..tipai_core import interrupt
from . import model_files
from .auditor_nodes import TiPAIAuditorLoader, TiPAIAuditorScore
from .editor_node import TiPAIAuditorInpaint
from .guard_node import TiPAITournamentGuard
from .miner_node import TiPAIRegionMiner
from .policy_node import TiPAITSPOSampler
from .referee_node import TiPAIRefereeRefine
from .region_prompt_node import TiPAIRegionPrompt
from .sampler_nodes import TiPAIKSampler, TiPAIPatchModel, TiPAISaveTournamentLog

model_files.register()
model_files.register_llm()
# the library's long loops (miner signals, Grad-CAM, tournaments, candidate groups) honour Cancel
interrupt.set_check(comfy.model_management.throw_exception_if_processing_interrupted)

NODES: list = [
    TiPAIAuditorLoader,
    TiPAIAuditorScore,
    TiPAIRegionMiner,
    TiPAIAuditorInpaint,
    TiPAITournamentGuard,
    TiPAITSPOSampler,
    TiPAIKSampler,
    TiPAIPatchModel,
    TiPAISaveTournamentLog,
    TiPAIRefereeRefine,
    TiPAIRegionPrompt,
]
