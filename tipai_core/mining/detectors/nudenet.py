"""NSFW body parts: NudeNet's 320n ONNX detector (YOLOv8-n, 18 classes), run with our own session.

Pre-processing as NudeNet's: pad the image to a square at the bottom and right with black, resize to
320×320, RGB in [0,1]. The output ``[1, 4 + 18, A]`` holds per anchor a box (cx, cy, w, h) in input
pixels and 18 class scores; a box is kept when its best class scores ≥ 0.2, then greedy NMS at
IoU 0.45 with a score floor of 0.25 (NudeNet's values). Risk r_b = score for exposed sexual parts
(``NSFW_LABELS``), 0 for everything else: faces and covered parts are found, not flagged.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Detection, ModelFile, OnnxDetector, clip_box, nms, resize

LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
NSFW_LABELS = frozenset(
    {"BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED"}
)
FACE_LABELS = frozenset({"FACE_FEMALE", "FACE_MALE"})
CANDIDATE_SCORE, KEEP_SCORE, NMS_IOU = 0.2, 0.25, 0.45


class NudeNetDetector(OnnxDetector):
    name = "nsfw"
    models = (ModelFile("320n.onnx", "nudenet", "", "pip install --no-deps nudenet==3.4.2"),)
    input_size = 320

    def _detect(self, rgb: torch.Tensor, prompt: str) -> list[Detection]:
        # the nsfw and age plugins share this instance: the same view is detected once
        key = (tuple(rgb.shape), hash(rgb.numpy().tobytes()))
        if self._last is not None and self._last[0] == key:
            return list(self._last[1])
        dets = self._run(rgb)
        self._last = (key, dets)
        return list(dets)

    _last: tuple | None = None

    def _run(self, rgb: torch.Tensor) -> list[Detection]:
        (sess,) = self.sessions()
        _, h, w = rgb.shape
        side = max(h, w)
        square = torch.zeros(3, side, side)
        square[:, :h, :w] = rgb  # pad bottom/right: box coordinates need no shift back
        x = resize(square, (self.input_size, self.input_size))[None].numpy().astype(np.float32)
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        rows = np.asarray(out)[0].T  # [A, 4 + 18]
        scores = rows[:, 4:]
        best = scores.max(axis=1)
        cand = np.nonzero(best >= CANDIDATE_SCORE)[0]
        if cand.size == 0:
            return []
        k = side / self.input_size
        cx, cy, bw, bh = (rows[cand, i] * k for i in range(4))
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        sc = best[cand]
        keep = [i for i in nms(boxes, sc, NMS_IOU) if sc[i] >= KEEP_SCORE]
        dets = []
        for i in keep:
            box = clip_box(boxes[i, 1], boxes[i, 0], boxes[i, 3], boxes[i, 2], h, w)
            if box is None:
                continue
            label = LABELS[int(scores[cand[i]].argmax())]
            s = float(sc[i])
            dets.append(Detection(label, s, box, s if label in NSFW_LABELS else 0.0))
        return dets

    def faces(self, image: torch.Tensor) -> list[Detection]:
        """The face boxes (FACE_FEMALE, FACE_MALE): the age plugin's input."""
        return [d for d in self.detect(image) if d.label in FACE_LABELS]
