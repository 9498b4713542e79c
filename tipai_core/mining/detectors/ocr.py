"""Text regions by OCR: RapidOCR's PP-OCRv4 detector (DBNet) and recogniser (CRNN + CTC), run with
our own sessions and a numpy/scipy re-implementation of their pre- and post-processing (their code
needs opencv, pyclipper and shapely).

Detection: scale the image so that its short side is 736 (sizes rounded to multiples of 32), BGR,
``(x − 0.5)/0.5``. The network's text probability map q is binarised at 0.3 and dilated by 2×2; each
connected component with mean q ≥ 0.5 inside its box becomes a text box, grown by DB's unclip
distance ``d = A · 1.6 / L`` (A, L area and perimeter of the box). Boxes are axis-aligned: the miner
needs where, not the exact quadrilateral.
Recognition: each box crop resized to height 48, ``(x − 0.5)/0.5``, padded to width ≥ 320; CTC
greedy decoding (drop repeats, then blanks) over the character list stored in the model's metadata.

Risk of a text line t, given the prompt's quoted strings Q (text the prompt asks to be shown):

    r(t) = conf(t)  if Q = ∅                 text the prompt did not ask for
         = 0        if norm(t) = norm(q) for some q ∈ Q     the requested text, spelled right
         = conf(t)  otherwise                 misspelled requested text, or other text

norm() folds case and drops spaces and punctuation; the reason goes into the detection's info.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from .base import Detection, ModelFile, OnnxDetector, clip_box, resize

_PKG, _INSTALL = "rapidocr_onnxruntime", "pip install --no-deps rapidocr-onnxruntime==1.4.4"
DET_SIDE, DET_THRESH, BOX_THRESH, UNCLIP, MIN_SIZE = 736, 0.3, 0.5, 1.6, 3
REC_H, REC_W = 48, 320
MAX_BOXES = 64  # the most confident lines are read; a noise texture must not cost hundreds of runs
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|\'([^\']{2,})\'')


def quoted_texts(prompt: str) -> list[str]:
    """The strings the prompt puts in quotes: the text it asks the image to show."""
    return [next(g for g in m if g) for m in _QUOTED.findall(prompt or "")]


def normalise_text(s: str) -> str:
    return re.sub(r"[\W_]+", "", s.casefold())


def text_risk(text: str, conf: float, prompt: str) -> tuple[float, str]:
    """(r, reason) of one recognised line given the prompt; see the module docstring."""
    wanted = quoted_texts(prompt)
    if not wanted:
        return conf, "unrequested"
    t = normalise_text(text)
    if any(t == normalise_text(q) for q in wanted):
        return 0.0, "requested"
    return conf, "misspelled_or_unrequested"


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    try:
        from scipy import ndimage
    except ImportError:  # scipy ships with ComfyUI; kornia is the slower fallback
        from ..regions import connected_components

        lab = connected_components(torch.from_numpy(mask.astype(np.float32))[None, None])[0, 0]
        ids, inv = torch.unique(lab, return_inverse=True)
        return inv.numpy().astype(np.int64) if ids[0] == 0 else (inv + 1).numpy(), int(ids.numel() - (ids[0] == 0))
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return lab, int(n)


class RapidOCRDetector(OnnxDetector):
    name = "text"
    models = (
        ModelFile("ch_PP-OCRv4_det_infer.onnx", _PKG, "models", _INSTALL),
        ModelFile("ch_PP-OCRv4_rec_infer.onnx", _PKG, "models", _INSTALL),
    )

    def __init__(self, providers=None, search_dirs=(), recognise: bool = True):
        super().__init__(providers, search_dirs)
        self.recognise = recognise
        self._chars: list[str] | None = None

    def text_boxes(self, rgb: torch.Tensor) -> list[tuple[tuple[int, int, int, int], float]]:
        """(box, mean q) of every text box in a [3,H,W] image."""
        det, _ = self.sessions()
        _, h, w = rgb.shape
        k = DET_SIDE / min(h, w) if min(h, w) < DET_SIDE else 1.0
        rh, rw = (max(32, int(round(int(v * k) / 32)) * 32) for v in (h, w))
        x = (resize(rgb.flip(0), (rh, rw)) - 0.5) / 0.5  # the model reads BGR
        q = np.asarray(det.run(None, {det.get_inputs()[0].name: x[None].numpy().astype(np.float32)})[0])[0, 0]
        bitmap = q > DET_THRESH
        bitmap[1:, 1:] |= bitmap[:-1, :-1] | bitmap[1:, :-1] | bitmap[:-1, 1:]  # 2×2 dilation
        lab, n = _label(bitmap)
        if n == 0:
            return []
        from scipy import ndimage  # noqa: F401  (find_objects needs scipy; _label checked it)

        out = []
        for sl in ndimage.find_objects(lab):
            if sl is None:
                continue
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            bh, bw = y1 - y0, x1 - x0
            if min(bh, bw) < MIN_SIZE:
                continue
            score = float(q[y0:y1, x0:x1].mean())
            if score < BOX_THRESH:
                continue
            d = bh * bw * UNCLIP / (2 * (bh + bw))
            box = clip_box((y0 - d) * h / rh, (x0 - d) * w / rw, (y1 + d) * h / rh, (x1 + d) * w / rw, h, w)
            if box is not None and min(box[2] - box[0], box[3] - box[1]) >= MIN_SIZE:
                out.append((box, score))
        out.sort(key=lambda b: (-b[1], b[0]))
        return out

    def read(self, rgb: torch.Tensor, boxes) -> list[tuple[str, float]]:
        """(text, mean character confidence) of each box crop, in one batched run of the recogniser."""
        if not boxes:
            return []
        _, rec = self.sessions()
        if self._chars is None:
            meta = rec.get_modelmeta().custom_metadata_map
            if "character" not in meta:
                from .base import DetectorError

                raise DetectorError("the OCR recogniser model holds no 'character' list: not a PP-OCR rec model")
            self._chars = ["blank", *meta["character"].splitlines(), " "]
        widths = [max(1, min(int(math.ceil(REC_H * (b[3] - b[1]) / (b[2] - b[0]))), 8 * REC_W)) for b in boxes]
        x = torch.zeros(len(boxes), 3, REC_H, max(REC_W, *widths))  # zero = mid-grey after normalisation
        for i, ((y0, x0, y1, x1), cw) in enumerate(zip(boxes, widths)):
            x[i, :, :, :cw] = (resize(rgb[:, y0:y1, x0:x1].flip(0), (REC_H, cw)) - 0.5) / 0.5
        p = np.asarray(rec.run(None, {rec.get_inputs()[0].name: x.numpy().astype(np.float32)})[0])
        out = []
        for pi in p:
            idx, prob = pi.argmax(axis=1), pi.max(axis=1)
            keep = np.ones_like(idx, dtype=bool)
            keep[1:] = idx[1:] != idx[:-1]
            keep &= idx != 0
            text = "".join(self._chars[i] if i < len(self._chars) else "" for i in idx[keep])
            out.append((text, float(prob[keep].mean()) if keep.any() else 0.0))
        return out

    def _detect(self, rgb: torch.Tensor, prompt: str) -> list[Detection]:
        found = self.text_boxes(rgb)[:MAX_BOXES]
        reads = self.read(rgb, [b for b, _ in found]) if self.recognise else [("", q) for _, q in found]
        dets = []
        for (box, q), (text, conf) in zip(found, reads):
            if self.recognise and not text.strip():
                continue
            risk, why = text_risk(text, conf if self.recognise else q, prompt)
            dets.append(Detection("text", conf, box, risk, {"text": text, "reason": why, "det_score": q}))
        return dets
