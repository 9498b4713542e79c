"""SaliencyMiner keeps the most salient part of a flat map instead of mining nothing."""

from __future__ import annotations

import torch

from tipai_core.mining.regions import SaliencyMiner


def test_flat_saliency_still_yields_a_region_within_max_area():
    sal = torch.full((1, 1, 32, 32), 0.8)
    sal[..., 4:10, 4:10] = 0.95  # a slightly more salient 36-pixel blob
    miner = SaliencyMiner(lambda image, prompt: sal, k=2, threshold=0.6, min_area_frac=0.01, max_area_frac=0.25)
    regions = miner(torch.zeros(1, 3, 32, 32), "p")
    assert len(regions) == 1
    assert regions[0].bbox == (4, 4, 10, 10) and regions[0].area == 36


def test_fixed_threshold_applies_when_it_is_the_stricter_one():
    sal = torch.zeros(1, 1, 32, 32)
    sal[..., :2, :2] = 0.7
    sal[..., 20:24, 20:24] = 0.5  # below the threshold: never mined
    miner = SaliencyMiner(lambda image, prompt: sal, k=3, threshold=0.6, min_area_frac=0.0, max_area_frac=0.5)
    regions = miner(torch.zeros(1, 3, 32, 32), "p")
    assert [r.bbox for r in regions] == [(0, 0, 2, 2)]
