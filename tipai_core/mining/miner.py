"""The region miner of step 3: fuse the saliency signals, keep the top-K regions, align them to the
latent grid, feather them, and say for each which signals raised it and which prompt words it holds.

Signals s_k(p) ∈ [0,1] on the audit view (H×W):

    gradcam          1 − norm(cam)                   auditor Grad-CAM faithfulness map (saliency.py)
    drift            |s_t − s_{t−1}| of gradcam       its change since the last audit of the run
    prompt_mismatch  1 − norm(⟨z(p), e_t⟩)            patch features vs the prompt
    feature_change   (1 − cos(z_t, z_{t−1}))/2        patch features vs the last audit's
    risk             max_c r_c(p)                     the auditor's policy-risk maps
    nsfw, age, text  π_d(p) = max_{b ∋ p} r_b         detector priors (detectors/)

Fusion with user weights w_k >= 0, normalised by the largest (a tempered noisy-OR):

    s(p) = 1 − Π_k (1 − s_k(p))^{w_k / max_j w_j}

so one signal at full weight that is sure (s_k = 1) is enough, weaker evidence adds up, a weight of
0 removes a signal, and s stays in [0,1]. Then the top-K connected regions of s (thresholds, area
limits, merged overlaps: ``regions.SaliencyMiner``), each snapped outward to the latent grid
(``f×f`` pixel blocks) and feathered. The user's mask is always a region, ahead of the K mined
ones. Provenance: signal k raised region R when its share of the fused evidence in R,
``c_k = Σ_{p∈R} w_k s_k(p) / Σ_j Σ_{p∈R} w_j s_j(p)``, is at least ``PROVENANCE_SHARE``.
Region prompt: the prompt's words w whose Grad-CAM ties to R, ``mean_R norm(cam_w) −
mean_{¬R} norm(cam_w) > 0`` (at most three, in prompt order), unless a user/LLM text is given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from .. import interrupt
from .masks import check_mask, feather, latent_to_pixel, pixel_to_latent
from .regions import Region, SaliencyMiner
from .saliency import (
    auditor_features,
    drift_map,
    feature_change_map,
    gradcam_map,
    is_blank,
    minmax_normalise,
    prompt_mismatch_map,
    upsample_grid,
    word_cams,
)

log = logging.getLogger(__name__)

AUDITOR_SIGNALS = ("gradcam", "drift", "prompt_mismatch", "feature_change", "risk")
DETECTOR_SIGNALS = ("nsfw", "age", "text")
SIGNALS = AUDITOR_SIGNALS + DETECTOR_SIGNALS
DEFAULT_WEIGHTS = {
    "gradcam": 1.0,
    "drift": 0.5,
    "prompt_mismatch": 0.0,
    "feature_change": 0.5,
    "risk": 1.0,
    "nsfw": 1.0,
    "age": 1.0,
    "text": 1.0,
}
PROVENANCE_SHARE = 0.2
_LOGGED: set[str] = set()
MAX_PROMPT_WORDS, REGION_WORDS = 12, 3
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "in",
        "on",
        "at",
        "to",
        "with",
        "without",
        "for",
        "from",
        "by",
        "as",
        "is",
        "are",
        "be",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "into",
        "over",
        "under",
        "very",
        "photo",
        "image",
        "picture",
    ]
)


def fuse(maps: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor | None:
    """``s = 1 − Π_k (1 − s_k)^{w_k / max w}`` over the maps with w_k > 0; None when there is none."""
    active = {k: float(weights.get(k, 0.0)) for k in maps if float(weights.get(k, 0.0)) > 0}
    if not active:
        return None
    top = max(active.values())
    log_keep = None
    for k, w in active.items():
        # log1p(−s) is −inf at s = 1: clamp so that a sure signal gives s = 1 − tiny, not NaN
        term = (w / top) * torch.log1p(-maps[k].float().clamp(0.0, 1.0 - 1e-7))
        log_keep = term if log_keep is None else log_keep + term
    assert log_keep is not None  # `active` is not empty
    return (1.0 - torch.exp(log_keep)).clamp(0.0, 1.0)


def prompt_words(prompt: str) -> list[str]:
    """Content words of the prompt in order, once each (no stop words, at most MAX_PROMPT_WORDS)."""
    seen: list[str] = []
    for w in re.findall(r"[A-Za-z][A-Za-z'-]+", prompt):
        lw = w.lower()
        if lw not in _STOP and lw not in seen:
            seen.append(lw)
    return seen[:MAX_PROMPT_WORDS]


def as_view(image: torch.Tensor) -> torch.Tensor:
    """[1,C,H,W] with C ∈ {1,2,3,4} (grey, grey+alpha, RGB, RGBA), float in [0,1] or uint8 -> float
    [1,3,H,W] in [0,1]; alpha over white, as the auditor composites it."""
    if (
        not isinstance(image, torch.Tensor)
        or image.dim() != 4
        or image.shape[0] != 1
        or image.shape[1] not in (1, 2, 3, 4)
    ):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"the miner takes one view [1,C,H,W] with C in 1..4, got {shape}")
    if image.shape[-1] < 1 or image.shape[-2] < 1:
        raise ValueError(f"the view is empty: {tuple(image.shape)}")
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if not torch.isfinite(x).all():
        raise ValueError("the view contains NaN or Inf values")
    if x.shape[1] in (2, 4):
        x = x[:, :-1] * x[:, -1:] + (1.0 - x[:, -1:])
    return x.expand(-1, 3, -1, -1).clamp(0.0, 1.0) if x.shape[1] == 1 else x.clamp(0.0, 1.0)


@dataclass
class AuditMemory:
    """The previous audit's Grad-CAM and patch tokens per stream (image of the batch): what drift
    and feature change compare against. ``reset()`` at the start of every run."""

    cams: dict[Hashable, torch.Tensor] = field(default_factory=dict)
    tokens: dict[Hashable, torch.Tensor] = field(default_factory=dict)

    def reset(self) -> None:
        self.cams.clear()
        self.tokens.clear()


@dataclass
class MiningResult:
    """What one call saw: every signal map [1,1,H,W], the fused map, the detections, and messages."""

    maps: dict[str, torch.Tensor]
    fused: torch.Tensor
    detections: dict[str, list]
    regions: list[Region]
    messages: dict[str, str]


@dataclass(frozen=True)
class MinerSettings:
    """The settings of a ``RegionMiner`` (see its docstring); the one list of them, which the nodes fill."""

    k: int = 3
    threshold: float = 0.5
    min_area_frac: float = 0.0
    max_area_frac: float = 1.0
    merge_margin: int = 0
    weights: Mapping[str, float] = field(default_factory=dict)
    latent_factor: int | None = 8
    feather_radius: int = 4
    region_prompt: str | None = None
    region_prompts: bool = False


class RegionMiner:
    """Step 3 of the audited step; a ``Miner``: ``miner(view [1,C,H,W], prompt, user_mask) -> regions``.

    auditor: A_s for the auditor signals (None: detectors and the user mask only).
    settings: a ``MinerSettings``; keyword arguments override its fields. They are:
    weights: w_k per signal name (``SIGNALS``); missing names take ``DEFAULT_WEIGHTS``.
    detectors: plugins by signal name (``detectors.build_detectors``); each that fails to load or run
      is switched off with its message in ``messages``, and mining goes on without it.
    k, threshold, min/max_area_frac, merge_margin: as ``regions.SaliencyMiner``; k = 0 mines nothing
      (the user mask is still a region).
    latent_factor: f of the latent grid; regions are snapped outward to f×f blocks when the view is a
      multiple of f (None: no snapping). feather_radius: pixels of the soft mask's edge.
    region_prompt: a text that replaces the Grad-CAM words as every region's prompt (user or LLM);
      region_prompts=True fills each region's prompt with the prompt words its Grad-CAM ties to it (every
      word's cam in one batched pass). Off by default; the editor is conditioned on a region's prompt
      when the loop has a region encoder (``AuditSuite.region_encoder``).
    prompter: ``prompter(region, prompt) -> text | None``, called last on every region, whose ``prompt``
      holds the text chosen so far (the Grad-CAM words, the fixed region prompt or None); its answer
      replaces that text, None keeps it (``prompting.region_refiner.RegionRefiner``: a local LLM).
    """

    def __init__(
        self,
        auditor=None,
        settings: MinerSettings | None = None,
        *,
        detectors: Mapping[str, Any] | None = None,
        memory: AuditMemory | None = None,
        prompter: Callable[[Region, str], str | None] | None = None,
        **overrides: Any,
    ):
        self.settings = replace(settings or MinerSettings(), **overrides)
        cfg = self.settings
        k, threshold, weights = cfg.k, cfg.threshold, cfg.weights
        min_area_frac, max_area_frac, merge_margin = cfg.min_area_frac, cfg.max_area_frac, cfg.merge_margin
        latent_factor, feather_radius = cfg.latent_factor, cfg.feather_radius
        region_prompt, region_prompts = cfg.region_prompt, cfg.region_prompts
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        w = dict(DEFAULT_WEIGHTS)
        for name, v in (weights or {}).items():
            if name not in SIGNALS:
                raise ValueError(f"unknown saliency signal {name!r}; the miner knows {list(SIGNALS)}")
            if not float(v) >= 0:
                raise ValueError(f"signal weights must be >= 0, got {name}={v}")
            w[name] = float(v)
        unknown = sorted(set(detectors or {}) - set(DETECTOR_SIGNALS))
        if unknown:
            raise ValueError(f"unknown detector signals {unknown}; detectors are {list(DETECTOR_SIGNALS)}")
        if latent_factor is not None and latent_factor < 1:
            raise ValueError(f"latent_factor must be >= 1 or None, got {latent_factor}")
        if feather_radius < 0:
            raise ValueError(f"feather_radius must be >= 0, got {feather_radius}")
        self.auditor = auditor
        self.weights = w
        self.detectors = dict(detectors or {})
        self.k = int(k)
        # SaliencyMiner does the thresholding, area limits, flat-map quantile and merging
        self._topk = SaliencyMiner(
            None,
            k=max(1, self.k),
            threshold=threshold,
            min_area_frac=min_area_frac,
            max_area_frac=max_area_frac,
            merge_margin=merge_margin,
        )
        self.latent_factor = latent_factor
        self.feather_radius = int(feather_radius)
        self.region_prompt = region_prompt.strip() if isinstance(region_prompt, str) and region_prompt.strip() else None
        self.region_prompts = bool(region_prompts)
        self.memory = memory if memory is not None else AuditMemory()
        self.prompter = prompter
        self.messages: dict[str, str] = {}
        self.last: MiningResult | None = None

    def soft_mask(self, region: Region) -> torch.Tensor:
        """The region's mask with a soft edge of ``feather_radius`` pixels (what a user sees as its mask)."""
        return feather(region.mask, self.feather_radius)

    def reset(self) -> None:
        """Forget the previous audit (a new run): drift and feature change start at 0."""
        self.memory.reset()

    # -- signals
    def _off(self, name: str, err: Exception) -> None:
        msg = f"TiPAI miner: the {name} detector is off: {err}"
        if msg not in _LOGGED:  # the nodes rebuild the miner at every audit: say it once per process
            _LOGGED.add(msg)
            log.warning(msg)
        self.messages[name] = msg
        self.detectors.pop(name, None)

    def signal_maps(self, view: torch.Tensor, prompt: str, stream: Hashable = 0):
        """(maps {name: [1,1,H,W]}, detections {name: [...]}, auditor features or None) for a view [1,3,H,W]."""
        size = (view.shape[-2], view.shape[-1])
        maps: dict[str, torch.Tensor] = {}
        dets: dict[str, list] = {}
        feats = None
        want = {n for n in AUDITOR_SIGNALS if self.weights[n] > 0}
        if self.auditor is not None and want:
            interrupt.check()
            feats = auditor_features(self.auditor, view.to(self.auditor.device, self.auditor.dtype), prompt)
            cam, z = feats.cam.cpu(), feats.tokens.cpu()
            grids = {}
            if "gradcam" in want:
                grids["gradcam"] = gradcam_map(cam)
            if "drift" in want:
                grids["drift"] = drift_map(cam, self.memory.cams.get(stream))
            if "feature_change" in want:
                grids["feature_change"] = feature_change_map(z, self.memory.tokens.get(stream))
            if "prompt_mismatch" in want:
                grids["prompt_mismatch"] = prompt_mismatch_map(z, self.auditor.text_features([prompt])[0].cpu())
            if "risk" in want:
                with torch.no_grad():
                    r = torch.sigmoid(self.auditor.heads.risk_logits(feats.tokens).float()).cpu()  # [1,C,h,w]
                grids["risk"] = r.amax(dim=1) if r.shape[1] else torch.zeros_like(cam)
            blank = bool(is_blank(view).all())
            for name, g in grids.items():
                maps[name] = torch.zeros(1, 1, *size) if blank else upsample_grid(g, size)
            self.memory.cams[stream], self.memory.tokens[stream] = cam, z
        for name, det in list(self.detectors.items()):
            if self.weights[name] <= 0:
                continue
            interrupt.check()  # each detector is one unit of work
            try:
                maps[name], dets[name] = det.prior(view.cpu(), prompt)
            except Exception as e:  # noqa: BLE001 - a broken plugin must not stop the audit
                self._off(name, e)
        return maps, dets, feats

    # -- regions
    def _snap(self, mask: torch.Tensor) -> torch.Tensor:
        f = self.latent_factor
        h, w = mask.shape[-2:]
        if f is None or f == 1 or h % f or w % f:
            return mask
        return latent_to_pixel(pixel_to_latent(mask, f, "max"), f)

    def _finish(
        self, region: Region, maps: Mapping[str, torch.Tensor], dets: Mapping[str, list], extra: tuple[str, ...] = ()
    ) -> Region:
        mask = self._snap(region.mask)
        on = mask[0, 0] > 0
        shares = {n: self.weights[n] * float(m[0, 0][on].float().sum()) for n, m in maps.items() if self.weights[n] > 0}
        total = sum(shares.values())
        signals = [
            n
            for n, v in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
            if total > 0 and v / total >= PROVENANCE_SHARE
        ]
        seen = []
        y0, x0, y1, x1 = Region.from_mask(mask).bbox
        for name, ds in dets.items():
            for d in ds:
                b = d.box
                if d.risk > 0 and b[0] < y1 and y0 < b[2] and b[1] < x1 and x0 < b[3]:
                    seen.append(
                        {
                            "detector": name,
                            "label": d.label,
                            "score": round(float(d.score), 4),
                            "box": list(b),
                            **{k: v for k, v in d.info.items()},
                        }
                    )
        out = Region.from_mask(mask, score=region.score)
        return replace(out, signals=tuple(dict.fromkeys((*extra, *signals))), info={"detections": seen})

    def _word_prompts(self, view: torch.Tensor, prompt: str, regions: list[Region]) -> list[str | None]:
        words = prompt_words(prompt)
        if not words or self.auditor is None:
            return [None] * len(regions)
        # every word's Grad-CAM in one batched pass (not one backward per word)
        wc = word_cams(self.auditor, view.to(self.auditor.device, self.auditor.dtype), words)
        cams = minmax_normalise(wc.cpu()[:, None])  # [T,1,h,w]
        cams = F.interpolate(cams, size=tuple(view.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        out: list[str | None] = []
        for r in regions:
            on = r.mask[0, 0].cpu() > 0
            if on.all() or not on.any():
                out.append(None)
                continue
            tie = cams[:, on].mean(dim=1) - cams[:, ~on].mean(dim=1)
            best = [i for i in torch.argsort(-tie).tolist() if tie[i] > 0][:REGION_WORDS]
            out.append(" ".join(words[i] for i in sorted(best)) or None)
        return out

    def saliency(
        self, image: torch.Tensor, prompt: str, user_mask: torch.Tensor | None = None, stream: Hashable = 0
    ) -> torch.Tensor:
        """The fused map s [1,1,H,W] (the user mask not included)."""
        view = as_view(image)
        maps, _, _ = self.signal_maps(view, prompt, stream)
        s = fuse(maps, self.weights)
        return torch.zeros(1, 1, *view.shape[-2:]) if s is None else s

    def __call__(
        self, image: torch.Tensor, prompt: str, user_mask: torch.Tensor | None = None, *, stream: Hashable = 0
    ) -> list[Region]:
        view = as_view(image)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the miner needs the prompt the view should show (a non-empty string)")
        prompt = prompt.strip()
        h, w = view.shape[-2:]
        maps, dets, _ = self.signal_maps(view, prompt, stream)
        fused = fuse(maps, self.weights)
        fused = torch.zeros(1, 1, h, w) if fused is None else fused
        regions: list[Region] = []
        user = None
        if user_mask is not None:
            check_mask(user_mask, "user_mask")
            um = user_mask[:1].float().cpu()
            if um.shape[-2:] != (h, w):
                um = F.interpolate(um, size=(h, w), mode="nearest")
            if (um > 0).any():
                user = (um > 0).float()
                regions.append(
                    self._finish(
                        Region.from_mask(user, score=float((fused * user).sum()) + float(user.sum())),
                        maps,
                        dets,
                        ("user",),
                    )
                )
        if self.k > 0 and fused.max() > 0:
            self._topk.saliency_fn = lambda _img, _p: fused
            try:
                found = self._topk(view.cpu(), prompt, None)
            finally:
                self._topk.saliency_fn = None
            for r in found[: self.k]:
                # a mined region mostly inside the user's mask is that region already
                if user is not None and float((r.mask * user).sum()) >= 0.5 * r.area:
                    continue
                regions.append(self._finish(r, maps, dets))
        if regions:
            if self.region_prompt is not None:
                texts: list[str | None] = [self.region_prompt] * len(regions)
            elif self.region_prompts:
                texts = self._word_prompts(view, prompt, regions)
            else:
                texts = [None] * len(regions)
            regions = [replace(r, prompt=t) for r, t in zip(regions, texts)]
            if self.prompter is not None:  # it sees the text chosen so far (for example the Grad-CAM words)
                regions = [replace(r, prompt=self.prompter(r, prompt) or r.prompt) for r in regions]
        self.last = MiningResult(maps, fused, dets, regions, dict(self.messages))
        return regions


def region_report(regions: list[Region]) -> list[dict]:
    """JSON-ready provenance of mined regions: bbox, area, score, signals, prompt, detections."""
    return [
        {
            "bbox": list(r.bbox),
            "area": r.area,
            "score": round(float(r.score), 6),
            "signals": list(r.signals),
            "prompt": r.prompt,
            "detections": list(r.info.get("detections", [])),
        }
        for r in regions
    ]


__all__ = [
    "AUDITOR_SIGNALS",
    "AuditMemory",
    "DEFAULT_WEIGHTS",
    "DETECTOR_SIGNALS",
    "MiningResult",
    "RegionMiner",
    "SIGNALS",
    "as_view",
    "fuse",
    "prompt_words",
    "region_report",
]
