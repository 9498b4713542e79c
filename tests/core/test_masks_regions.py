"""Masks (kornia morphology, feathering, pixel <-> latent) and regions (components, top-K, merge, crops)."""

from __future__ import annotations

import pytest
import scipy.ndimage as ndi
import torch

from tipai_core.mining.masks import check_mask_matches, dilate, erode, feather, latent_to_pixel, pixel_to_latent
from tipai_core.mining.regions import (
    Region,
    SaliencyMiner,
    compose,
    connected_components,
    context_box,
    merge_overlapping,
    top_k_regions,
)


def _square(h, w, y0, x0, y1, x1):
    m = torch.zeros(1, 1, h, w)
    m[..., y0:y1, x0:x1] = 1
    return m


def test_dilate_and_erode_grow_and_shrink_a_square_exactly():
    m = _square(12, 12, 4, 4, 7, 7)
    assert torch.equal(dilate(m, 2), _square(12, 12, 2, 2, 9, 9))
    assert torch.equal(erode(_square(12, 12, 2, 2, 9, 9), 2), m)
    assert torch.equal(dilate(m, 0), m)
    # a mask touching the border is not eroded by the outside
    assert torch.equal(erode(_square(6, 6, 0, 0, 6, 6), 1), _square(6, 6, 0, 0, 6, 6))


def test_feather_is_soft_inside_its_radius_and_exactly_zero_beyond():
    m = _square(20, 20, 8, 8, 12, 12)
    f = feather(m, 3)
    assert f.min() >= 0 and f.max() <= 1
    support = dilate(m, 3)
    assert torch.equal(f[support == 0], torch.zeros(int((support == 0).sum())))
    assert (f[support == 1] > 0).all()
    soft = (f > 0) & (f < 1)
    assert soft.any()
    # closed form: the square is separable, m(y, x) = a(y)·a(x), so f = (k * a)(y)·(k * a)(x)
    r, sig = 3, 1.5
    taps = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(taps**2) / (2 * sig**2))
    k = k / k.sum()
    a = torch.zeros(20, dtype=torch.float64)
    a[8:12] = 1
    ka = torch.nn.functional.conv1d(a.reshape(1, 1, -1), k.reshape(1, 1, -1), padding=r).reshape(-1)
    torch.testing.assert_close(f[0, 0].double(), torch.outer(ka, ka).clamp(max=1.0), rtol=0, atol=2e-6)


def test_pixel_latent_mapping_is_aligned_to_the_vae_factor():
    px = torch.zeros(1, 1, 32, 32)
    px[..., 9:10, 17:18] = 1  # one pixel in latent cell (1, 2) with factor 8
    lat = pixel_to_latent(px, 8, "max")
    assert lat.shape == (1, 1, 4, 4)
    assert lat[0, 0, 1, 2] == 1 and lat.sum() == 1
    assert pixel_to_latent(px, 8, "area")[0, 0, 1, 2] == pytest.approx(1 / 64)
    back = latent_to_pixel(lat, 8)
    assert torch.equal(back, _square(32, 32, 8, 16, 16, 24))
    soft = latent_to_pixel(lat, 8, "bilinear")
    # pixel (12, 20) samples latent coordinates (1.0625, 2.0625): bilinear weight 0.9375² on cell (1, 2)
    assert soft[0, 0, 12, 20] == 0.9375**2
    # exactly zero outside the one-cell neighbourhood of the mask
    assert torch.equal(
        soft[latent_to_pixel(dilate(lat, 1), 8) == 0], torch.zeros(int((latent_to_pixel(dilate(lat, 1), 8) == 0).sum()))
    )
    with pytest.raises(ValueError, match="multiple of the VAE factor 8"):
        pixel_to_latent(torch.zeros(1, 1, 30, 32), 8)


def test_mask_size_mismatch_raises():
    with pytest.raises(ValueError, match="m of shape"):
        check_mask_matches(torch.zeros(1, 1, 5, 5), torch.zeros(1, 4, 6, 6), "m")
    with pytest.raises(ValueError, match=r"mask must be \[B, 1, H, W\]"):
        dilate(torch.zeros(5, 5), 1)


def test_connected_components_agree_with_scipy_8_connectivity():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m = (torch.rand(1, 1, 24, 31, generator=g) > 0.6).float()
        labels = connected_components(m)[0, 0].numpy()
        ref, n_ref = ndi.label(m[0, 0].numpy(), structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
        ours = {frozenset(zip(*(labels == v).nonzero())) for v in set(labels.ravel()) - {0}}
        theirs = {frozenset(zip(*(ref == v).nonzero())) for v in range(1, n_ref + 1)}
        assert ours == theirs


def test_top_k_regions_ranks_by_mass_and_applies_area_limits():
    sal = torch.zeros(1, 1, 20, 20)
    sal[..., 0:2, 0:2] = 0.9  # area 4, mass 3.6
    sal[..., 5:9, 5:9] = 0.6  # area 16, mass 9.6
    sal[..., 12:15, 12:15] = 1.0  # area 9, mass 9
    sal[..., 18, 18] = 1.0  # area 1
    regions = top_k_regions(sal, k=2, threshold=0.5, min_area=2)
    assert [r.bbox for r in regions] == [(5, 5, 9, 9), (12, 12, 15, 15)]
    assert [r.area for r in regions] == [16, 9]
    assert regions[0].score == pytest.approx(9.6)
    capped = top_k_regions(sal, k=5, threshold=0.5, min_area=2, max_area=10)
    assert [r.bbox for r in capped] == [(12, 12, 15, 15), (0, 0, 2, 2)]
    assert top_k_regions(torch.zeros(1, 1, 8, 8), k=3) == []
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_regions(sal, k=0)


def test_merging_of_overlapping_regions():
    a = Region.from_mask(_square(16, 16, 0, 0, 4, 4), score=1.0)
    b = Region.from_mask(_square(16, 16, 3, 3, 6, 6), score=2.0)
    c = Region.from_mask(_square(16, 16, 10, 10, 12, 12), score=4.0)
    merged = merge_overlapping([a, b, c])
    assert len(merged) == 2
    assert merged[0].bbox == (0, 0, 6, 6) and merged[0].score == 3.0
    assert merged[0].area == 16 + 9 - 1
    # within a margin of 3 pixels, c joins too
    assert len(merge_overlapping([a, b, c], margin=3)) == 1


def test_empty_region_raises():
    with pytest.raises(ValueError, match="all zero"):
        Region.from_mask(torch.zeros(1, 1, 8, 8))


def test_context_box_and_compose():
    box = context_box((5, 6, 9, 10), margin=2, size=(16, 16), align=4)
    assert box == (0, 4, 12, 12)
    assert context_box((0, 0, 3, 3), margin=5, size=(8, 8)) == (0, 0, 8, 8)
    base = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    patch = torch.ones(2, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 0.5
    out = compose(base, patch, (4, 4, 8, 8), mask)
    assert out.shape == (2, 3, 16, 16)
    keep = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    keep[..., 5:7, 5:7] = False
    assert torch.equal(out[keep.expand(2, 3, 16, 16)], base.expand(2, 3, 16, 16)[keep.expand(2, 3, 16, 16)])
    torch.testing.assert_close(out[:, :, 5:7, 5:7], 0.5 * base[:, :, 5:7, 5:7].expand(2, 3, 2, 2) + 0.5)
    with pytest.raises(ValueError, match="does not fit"):
        compose(base, patch, (0, 0, 5, 5))


def test_saliency_miner_fuses_a_user_mask():
    miner = SaliencyMiner(None, k=2, min_area_frac=0.01)
    img = torch.zeros(1, 3, 32, 32)
    user = _square(64, 64, 8, 8, 24, 24)  # full-resolution mask, resized to the view
    regions = miner(img, "p", user)
    assert len(regions) == 1 and regions[0].bbox == (4, 4, 12, 12)
    assert miner(img, "p") == []
