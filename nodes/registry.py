"""Every node the pack registers. Node ids are public API: saved workflows refer to them, so
an id that has shipped is never renamed or removed."""

from __future__ import annotations

from . import model_files
from .auditor_nodes import TiPAIAuditorLoader, TiPAIAuditorScore
from .editor_node import TiPAIAuditorInpaint
from .guard_node import TiPAITournamentGuard
from .miner_node import TiPAIRegionMiner
from .policy_node import TiPAITSPOSampler
from .sampler_nodes import TiPAIKSampler, TiPAIPatchModel, TiPAISaveTournamentLog

model_files.register()

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
]
