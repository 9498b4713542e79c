"""What every detector plugin shares: model-file lookup, one cached onnxruntime session per file,
execution providers, image conversion, boxes, NMS and the prior map a detector adds to the miner.

A detector prior is a map ``π(p) = max_{b ∋ p} r_b`` over the detector's boxes b, r_b ∈ [0, 1] the
risk the plugin gives each box (zero for boxes that are found but harmless, e.g. a covered body
part). The carrier packages' own code is never imported: it pulls opencv and pins that clash with
ComfyUI installs. Only their ONNX files are read, located with ``importlib.util.find_spec``, which
does not execute the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), end exclusive, as regions.Region.bbox


class DetectorUnavailable(RuntimeError):
    """A detector's model file is not installed; the message says how to get it."""


class DetectorError(RuntimeError):
    """A detector's model file is there but cannot be used (corrupt, wrong model)."""


@dataclass(frozen=True)
class Detection:
    """One box of one detector: its label, confidence, box, the risk r_b it adds, and extras
    (age, text) for the report."""

    label: str
    score: float
    box: Box
    risk: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFile:
    """Where a detector's ONNX file may be: a file name, and the carrier package + subfolder."""

    filename: str
    package: str
    subdir: str = ""
    install: str = ""  # the pip line that installs the carrier


def locate(model: ModelFile, search_dirs: Sequence[str | os.PathLike] = ()) -> Path:
    """The model file: first in ``search_dirs`` (e.g. ComfyUI's models/tipai), then inside the
    installed carrier package; else DetectorUnavailable naming both ways to provide it."""
    for d in search_dirs:
        p = Path(d) / model.filename
        if p.is_file():
            return p
    looked = [str(Path(d) / model.filename) for d in search_dirs]
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            p = Path(root) / model.subdir / model.filename
            if p.is_file():
                return p
            looked.append(str(p))
    where = f" or put {model.filename} into {', '.join(map(str, search_dirs))}" if search_dirs else ""
    raise DetectorUnavailable(
        f"TiPAI detector model {model.filename} not found. Install its carrier package with "
        f"`{model.install}` (only the model file is used; --no-deps keeps its opencv/onnxruntime pins "
        f"out of your environment){where}. Looked in: {', '.join(looked) or 'nowhere'}"
    )


def providers_for(device: str | torch.device | None = None) -> list[str]:
    """onnxruntime execution providers that follow the torch device: CUDA when the device is a GPU
    and onnxruntime has CUDA, always CPU as the fallback."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    want = []
    if device is not None and torch.device(device).type == "cuda" and "CUDAExecutionProvider" in available:
        want.append("CUDAExecutionProvider")
    return want + ["CPUExecutionProvider"]


_SESSIONS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def session(path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",)):
    """One onnxruntime InferenceSession per (file, size, mtime, providers), created once and reused
    by every miner that asks for it (the nodes rebuild the miner at each audit)."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a pack requirement
        raise DetectorUnavailable("onnxruntime is not installed: `pip install onnxruntime` (or onnxruntime-gpu)") from e
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, tuple(providers))
    with _LOCK:
        if key not in _SESSIONS:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                _SESSIONS[key] = ort.InferenceSession(str(p), sess_options=opts, providers=list(providers))
            except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
                raise DetectorError(
                    f"TiPAI detector model {p} cannot be loaded by onnxruntime "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). The file is "
                    f"corrupt or not that model: reinstall its package or replace the file."
                ) from e
        return _SESSIONS[key]


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """[1,C,H,W] (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), float in [0,1] or uint8 -> float [3,H,W]
    on the CPU; alpha composited over white as the auditor does."""
    if (
        not isinstance(image, torch.Tensor)
        or image.dim() != 4
        or image.shape[0] != 1
        or image.shape[1] not in (1, 2, 3, 4)
    ):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"a detector takes one image [1,C,H,W] with C in 1..4, got {shape}")
    x = image[0].detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[0] in (2, 4):
        x = x[:-1] * x[-1:] + (1.0 - x[-1:])
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.clamp(0.0, 1.0)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [C,H,W] (antialiased when shrinking, so small text survives)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]


def iou(a: Box, b: Box) -> float:
    iy = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ix = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iy * ix
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; boxes [N,4] as (x0, y0, x1, y1). Ties keep the lower index."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep: list[int] = []
    for i in order:
        if all(iou(_yx(boxes[i]), _yx(boxes[j])) <= iou_threshold for j in keep):
            keep.append(i)
    return keep


def _yx(b) -> Box:
    return (float(b[1]), float(b[0]), float(b[3]), float(b[2]))  # type: ignore[return-value]


def clip_box(y0: float, x0: float, y1: float, x1: float, h: int, w: int) -> Box | None:
    box = (max(0, int(np.floor(y0))), max(0, int(np.floor(x0))), min(h, int(np.ceil(y1))), min(w, int(np.ceil(x1))))
    return box if box[2] > box[0] and box[3] > box[1] else None


def prior_map(detections: Iterable[Detection], size: tuple[int, int]) -> torch.Tensor:
    """π(p) = max over boxes containing p of r_b, [1,1,H,W] float; zero where no risky box lies."""
    out = torch.zeros(1, 1, *size)
    for d in detections:
        if d.risk > 0:
            y0, x0, y1, x1 = d.box
            out[..., y0:y1, x0:x1] = torch.clamp_min(out[..., y0:y1, x0:x1], float(d.risk))
    return out.clamp(0.0, 1.0)


class OnnxDetector:
    """A detector plugin: a name, its model files, a lazily created shared session, ``detect`` and
    ``prior``. Subclasses set ``name``, ``models`` and implement ``_detect``."""

    name: str = ""
    models: tuple[ModelFile, ...] = ()

    def __init__(self, providers: Sequence[str] | None = None, search_dirs: Sequence[str | os.PathLike] = ()):
        self.providers = tuple(providers) if providers else ("CPUExecutionProvider",)
        self.search_dirs = tuple(search_dirs)
        self._sessions: list[Any] | None = None

    def sessions(self) -> list[Any]:
        """The sessions of all model files; raises DetectorUnavailable / DetectorError with a message."""
        if self._sessions is None:
            self._sessions = [session(locate(m, self.search_dirs), self.providers) for m in self.models]
        return self._sessions

    def check(self) -> None:
        """Load now (raises DetectorUnavailable or DetectorError), so a miner can report it early."""
        self.sessions()

    def detect(self, image: torch.Tensor, prompt: str = "") -> list[Detection]:
        return self._detect(to_rgb(image), prompt)

    def _detect(self, rgb: torch.Tensor, prompt: str) -> list[Detection]:
        raise NotImplementedError

    def prior(self, image: torch.Tensor, prompt: str = "") -> tuple[torch.Tensor, list[Detection]]:
        """(π [1,1,H,W] in [0,1] on the image's device, the detections)."""
        dets = self.detect(image, prompt)
        return prior_map(dets, (image.shape[-2], image.shape[-1])).to(image.device), dets
