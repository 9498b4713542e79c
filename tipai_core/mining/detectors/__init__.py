"""Detector priors for the region miner, one plugin per file, each an ONNX model run with the pack's
own onnxruntime session (created once, shared): ``nsfw`` (NudeNet body parts), ``age`` (faces with
apparent age: an apparent minor is a risk where the policy covers minors) and ``text`` (RapidOCR:
text the prompt did not ask for, or misspelled quoted text).

None is required. A plugin whose model file is missing raises DetectorUnavailable with the pip line
that installs it and the folder it may be put in; a corrupt file raises DetectorError. The miner
catches both, reports the message and keeps working with its other signals.
"""

from __future__ import annotations

from collections.abc import Sequence

from .age import AgeDetector
from .base import Detection, DetectorError, DetectorUnavailable, ModelFile, OnnxDetector, locate, providers_for
from .nudenet import NudeNetDetector
from .ocr import RapidOCRDetector

DETECTORS: dict[str, type[OnnxDetector]] = {"nsfw": NudeNetDetector, "age": AgeDetector, "text": RapidOCRDetector}


def build_detectors(
    names: Sequence[str], providers: Sequence[str] | None = None, search_dirs: Sequence[str] = ()
) -> dict[str, OnnxDetector]:
    """Plugins by name, sharing one NudeNet instance between ``nsfw`` and ``age`` (faces come from it)."""
    unknown = sorted(set(names) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown detectors {unknown}; available: {sorted(DETECTORS)}")
    out: dict[str, OnnxDetector] = {}
    nude = NudeNetDetector(providers, search_dirs) if {"nsfw", "age"} & set(names) else None
    for n in names:
        if n == "nsfw":
            assert nude is not None  # built whenever "nsfw" is asked for
            out[n] = nude
        elif n == "age":
            out[n] = AgeDetector(providers, search_dirs, faces=nude)
        else:
            out[n] = DETECTORS[n](providers, search_dirs)
    return out


__all__ = [
    "AgeDetector",
    "DETECTORS",
    "Detection",
    "DetectorError",
    "DetectorUnavailable",
    "ModelFile",
    "NudeNetDetector",
    "OnnxDetector",
    "RapidOCRDetector",
    "build_detectors",
    "locate",
    "providers_for",
]
