"""Saliency functions on the tiny random-weight open_clip auditor, and their fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tipai_core.mining.regions import SaliencyMiner
from tipai_core.testing.auditor_synthetic import write_tiny_open_clip
from tipai_core.mining.saliency import faithfulness_saliency, fused_saliency, minmax_normalise, risk_saliency

@pytest.fixture(scope="module")
def auditor(tmp_path_factory):
    from tipai_core.auditor import TINY_ARCH, Auditor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CPU cores; restored for the tests that follow
    path = write_tiny_open_clip(tmp_path_factory.mktemp("saliency_clip") / "tiny_clip.safetensors", seed=0)
    yield Auditor.from_files(path, arch=TINY_ARCH, classes=["nsfw", "gore", "weapon"])
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    img = 0.4 + 0.1 * torch.rand(1, 3, 48, 40, generator=g)
    img[:, :, 8:24, 4:20] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)  # a red square
    return img


def _const(value: torch.Tensor):
    return lambda image, prompt: value


def test_fusion_is_the_closed_form_weighted_mean():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 1, 6, 5, generator=g), torch.rand(1, 1, 6, 5, generator=g)
    img = torch.zeros(1, 3, 6, 5)
    got = fused_saliency([(_const(a), 1.0), (_const(b), 3.0)])(img, "p")
    torch.testing.assert_close(got, (1.0 * a + 3.0 * b) / 4.0, rtol=0, atol=1e-7)
    assert got.shape == (1, 1, 6, 5) and got.dtype == img.dtype

    def never(image, prompt):
        raise AssertionError("a term of weight 0 must not be evaluated")

    torch.testing.assert_close(fused_saliency([(_const(a), 2.0), (never, 0.0)])(img, "p"), a)


def test_fusion_rejects_bad_terms():
    img = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="at least one"):
        fused_saliency([])
    with pytest.raises(ValueError, match="all be 0"):
        fused_saliency([(_const(torch.zeros(1, 1, 4, 4)), 0.0)])
    with pytest.raises(ValueError, match=">= 0"):
        fused_saliency([(_const(torch.zeros(1, 1, 4, 4)), -1.0)])
    with pytest.raises(ValueError, match=r"term 1 returned \(1, 1, 2, 2\)"):
        fused_saliency([(_const(torch.zeros(1, 1, 4, 4)), 1.0), (_const(torch.zeros(1, 1, 2, 2)), 1.0)])(img, "p")


def test_minmax_normalise_per_image_and_flat_maps():
    x = torch.stack([torch.tensor([[1.0, 3.0], [2.0, 5.0]]), torch.full((2, 2), 7.0)])[:, None]
    out = minmax_normalise(x)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(1, 2, 2))  # flat: no "where", no saliency


def test_risk_saliency_is_the_weighted_max_of_the_risk_maps(auditor, image):
    r = auditor.risk_maps(image)  # [1,3,H,W]
    s = risk_saliency(auditor)(image, "a red square")
    assert s.shape == (1, 1, 48, 40) and 0 <= float(s.min()) and float(s.max()) <= 1
    torch.testing.assert_close(s, r.amax(dim=1, keepdim=True))
    one = risk_saliency(auditor, {"gore": 0.5})(image, "ignored")
    torch.testing.assert_close(one, 0.5 * r[:, 1:2])
    zero = risk_saliency(auditor, {"nsfw": 0.0, "gore": 0.0, "weapon": 0.0})(image, "a red square")
    assert torch.equal(zero, torch.zeros(1, 1, 48, 40))
    with pytest.raises(ValueError, match="unknown classes"):
        risk_saliency(auditor, {"violence": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        risk_saliency(auditor, {"gore": -1.0})


def test_faithfulness_saliency_matches_the_patch_text_formula(auditor, image):
    fn = faithfulness_saliency(auditor)
    s = fn(image, "a red square")
    assert s.shape == (1, 1, 48, 40) and s.dtype == image.dtype
    assert float(s.min()) >= 0 and float(s.max()) <= 1 and float(s.max() - s.min()) > 0.3
    with torch.no_grad():
        e_t = auditor.text_features(["a red square"])[0]
        _, z = auditor.encode(image)
    cos = (z * e_t).sum(-1)[:, None]  # [1,1,h,w]
    expected = 1 - (cos - cos.min()) / (cos.max() - cos.min())
    torch.testing.assert_close(s, F.interpolate(expected, size=(48, 40), mode="bilinear", align_corners=False),
                               rtol=0, atol=1e-5)


def test_faithfulness_saliency_is_cache_invariant_and_prompt_dependent(auditor, image):
    fn = faithfulness_saliency(auditor)
    first = fn(image, "a blue circle on grass")  # computes and caches the text feature
    assert torch.equal(fn(image, "a blue circle on grass"), first)  # from the cache: the same map
    assert torch.equal(fn(image, "  a blue circle on grass "), first)  # surrounding spaces are no new prompt
    other = fn(image, "a red square")
    assert (other - first).abs().max() > 1e-3
    with pytest.raises(ValueError, match="prompt"):
        fn(image, "  ")
    with pytest.raises(ValueError, match="image"):
        fn(image[0], "a red square")


def test_fused_auditor_saliency_drives_the_miner(auditor, image):
    fused = fused_saliency([(risk_saliency(auditor), 1.0), (faithfulness_saliency(auditor), 1.0)])
    s = fused(image, "a red square")
    expected = (risk_saliency(auditor)(image, "a red square") + faithfulness_saliency(auditor)(image, "a red square")) / 2
    torch.testing.assert_close(s, expected, rtol=0, atol=1e-6)
    regions = SaliencyMiner(fused, k=2, threshold=float(s.quantile(0.8)))(image, "a red square")
    assert 1 <= len(regions) <= 2 and all(r.mask.shape == (1, 1, 48, 40) for r in regions)
