"""The saliency maps' normalisation: per image, and a flat map carries no "where"."""

from __future__ import annotations

import torch

from tipai_core.mining.saliency import minmax_normalise


def test_minmax_normalise_per_image_and_flat_maps():
    x = torch.stack([torch.tensor([[1.0, 3.0], [2.0, 5.0]]), torch.full((2, 2), 7.0)])[:, None]
    out = minmax_normalise(x)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(1, 2, 2))  # flat: no "where", no saliency
