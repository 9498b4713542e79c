"""The region miner: planted defects found at IoU >= 0.5, the user mask always a region, drift,
determinism, region prompts from Grad-CAM words, and bad input."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tipai_core.mining.miner import RegionMiner, fuse, prompt_words, region_report
from tipai_core.mining.saliency import auditor_features, drift_map, feature_change_map
from tipai_core.testing.miner_synthetic import box_mask, colour_auditor, mask_iou, render_text

RED = torch.tensor([0.85, 0.1, 0.1]).view(1, 3, 1, 1)
BLUE_BOX = (64, 160, 128, 224)
AUDITOR_ONLY = {"gradcam": 1.0, "drift": 0.0, "feature_change": 0.0, "risk": 0.0, "prompt_mismatch": 0.0}


@pytest.fixture(scope="module")
def auditor():
    return colour_auditor()


def red_with_blue(size=(256, 256)):
    img = RED.expand(1, 3, *size).clone()
    y0, x0, y1, x1 = BLUE_BOX
    img[..., y0:y1, x0:x1] = torch.tensor([0.1, 0.1, 0.85]).view(1, 3, 1, 1)
    return img


def _best_iou(regions, box, size):
    return max((mask_iou(r.mask, box_mask(size, box)) for r in regions), default=0.0)


def test_contradicted_patch_is_found(auditor):
    miner = RegionMiner(auditor, weights=AUDITOR_ONLY, k=2, threshold=0.5)
    regions = miner(red_with_blue(), "a red image")
    iou = _best_iou(regions, BLUE_BOX, (256, 256))
    print(f"contradicted patch IoU {iou:.3f}")
    assert iou >= 0.5
    assert regions[0].signals == ("gradcam",)


@pytest.mark.skipif(
    importlib.util.find_spec("rapidocr_onnxruntime") is None, reason="rapidocr-onnxruntime not installed"
)
def test_planted_word_and_patch_are_both_found():
    from tipai_core.mining.detectors import RapidOCRDetector

    img, word = render_text(red_with_blue(), "SALE", (24, 170), size=48)
    miner = RegionMiner(
        colour_auditor(),
        weights={**AUDITOR_ONLY, "text": 1.0},
        detectors={"text": RapidOCRDetector()},
        k=3,
        threshold=0.5,
        latent_factor=None,
    )
    regions = miner(img, "a red image")
    ious = {"word": _best_iou(regions, word, (256, 256)), "patch": _best_iou(regions, BLUE_BOX, (256, 256))}
    print("planted defects IoU:", ious, region_report(regions))
    assert min(ious.values()) >= 0.5
    by_word = max(regions, key=lambda r: mask_iou(r.mask, box_mask((256, 256), word)))
    assert "text" in by_word.signals
    assert any(d.get("text", "").upper() == "SALE" for d in by_word.info["detections"])


def test_user_mask_is_always_a_region(auditor):
    um = box_mask((256, 256), (8, 8, 40, 72))
    for k in (0, 2):
        for img in (red_with_blue(), torch.full((1, 3, 256, 256), 0.5)):
            regions = RegionMiner(auditor, k=k, region_prompts=False)(img, "a red image", um)
            assert regions and regions[0].signals[0] == "user"
            assert mask_iou(regions[0].mask, um) >= 0.5
    # K = 0 and no user mask: nothing, no error
    assert RegionMiner(auditor, k=0)(red_with_blue(), "a red image") == []


def test_drift_is_zero_for_identical_views_and_larger_where_the_view_changed(auditor):
    a = RED.expand(1, 3, 256, 256).clone()
    b = red_with_blue()
    fa, fa2, fb = (auditor_features(auditor, x, "a red image") for x in (a, a.clone(), b))
    assert torch.equal(drift_map(fa2.cam, fa.cam), torch.zeros_like(fa.cam))
    assert torch.equal(feature_change_map(fa2.tokens, fa.tokens), torch.zeros_like(fa.cam))
    d = drift_map(fb.cam, fa.cam)[0]
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[BLUE_BOX[0] // 16 : BLUE_BOX[2] // 16, BLUE_BOX[1] // 16 : BLUE_BOX[3] // 16] = True
    print(f"drift inside the change {float(d[inside].mean()):.3f}, outside {float(d[~inside].mean()):.3f}")
    assert d[inside].mean() > 0.5 and d[inside].mean() > 5 * d[~inside].mean()
    # through the miner: the first audit has no drift; the second sees it where the view changed
    miner = RegionMiner(auditor, weights={"gradcam": 0.0, "risk": 0.0, "feature_change": 0.0, "drift": 1.0}, k=1)
    assert miner(a, "a red image") == []
    miner(a, "a red image")
    assert float(miner.last.maps["drift"].abs().max()) == 0.0
    (r,) = miner(b, "a red image")
    assert mask_iou(r.mask, box_mask((256, 256), BLUE_BOX)) >= 0.5 and r.signals == ("drift",)
    miner.reset()
    assert miner(b, "a red image") == []


def test_same_inputs_same_regions(auditor):
    img = red_with_blue() * 0.9 + 0.1 * torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    runs = [RegionMiner(colour_auditor(), k=3, region_prompts=True)(img, "a red image") for _ in range(2)]
    assert [r.bbox for r in runs[0]] == [r.bbox for r in runs[1]]
    assert all(torch.equal(x.mask, y.mask) and x.signals == y.signals and x.prompt == y.prompt for x, y in zip(*runs))


def test_regions_are_on_the_latent_grid(auditor):
    img = RED.expand(1, 3, 256, 256).clone()
    img[..., 70:117, 150:203] = torch.tensor([0.1, 0.1, 0.85]).view(1, 3, 1, 1)  # off the 8-pixel grid
    (r,) = RegionMiner(auditor, weights=AUDITOR_ONLY, k=1, latent_factor=8, feather_radius=4)(img, "a red image")
    assert all(v % 8 == 0 for v in r.bbox)
    assert r.bbox == (64, 144, 120, 208)  # the square's box (70:117, 150:203) snapped outward to the grid


def test_region_prompt_holds_the_words_the_gradcam_ties_to_it(auditor):
    # the user's region is the blue square: of the prompt's words, Grad-CAM ties "blue" to it, not "red"
    miner = RegionMiner(auditor, weights=AUDITOR_ONLY, k=0, region_prompts=True)
    (r,) = miner(red_with_blue(), "a red field with a blue square", box_mask((256, 256), BLUE_BOX))
    print("region prompt:", r.prompt)
    assert r.prompt is not None and "blue" in r.prompt.split() and "red" not in r.prompt.split()
    (r2,) = RegionMiner(auditor, weights=AUDITOR_ONLY, k=1, region_prompt="a tidy red tile")(
        red_with_blue(), "a red image"
    )
    assert r2.prompt == "a tidy red tile"
    assert prompt_words("A red field, with a blue square and a red cat") == ["red", "field", "blue", "square", "cat"]


def test_the_prompter_sees_the_gradcam_words_and_its_answer_replaces_them(auditor):
    seen = []

    def prompter(region, prompt):
        seen.append((region.prompt, prompt))
        return None if len(seen) > 1 else f"{region.prompt} again"

    um = box_mask((256, 256), BLUE_BOX)
    text = "a red field with a blue square"
    (plain,) = RegionMiner(auditor, weights=AUDITOR_ONLY, k=0, region_prompts=True)(red_with_blue(), text, um)
    miner = RegionMiner(auditor, weights=AUDITOR_ONLY, k=0, region_prompts=True, prompter=prompter)
    (r,) = miner(red_with_blue(), text, um)
    assert plain.prompt and seen == [(plain.prompt, text)] and r.prompt == f"{plain.prompt} again"
    (r,) = miner(red_with_blue(), text, um)
    assert r.prompt == plain.prompt  # None keeps the text chosen so far


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (1, 1, 64, 48), (1, 4, 80, 96), (1, 2, 33, 33)])
def test_any_size_grey_and_alpha(auditor, shape):
    img = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    regions = RegionMiner(auditor, k=2)(img, "a red image")
    assert all(r.mask.shape[-2:] == shape[-2:] for r in regions)
    uint8 = (img * 255).round().to(torch.uint8)
    assert len(RegionMiner(auditor, k=2)(uint8, "a red image")) == len(regions)


def test_blank_image_gives_no_regions(auditor):
    for v in (0.0, 0.5, 1.0):
        miner = RegionMiner(auditor, k=3)
        assert miner(torch.full((1, 3, 128, 128), v), "a red image") == []
        assert float(miner.last.fused.max()) == 0.0


def test_bad_input_messages(auditor):
    miner = RegionMiner(auditor)
    with pytest.raises(ValueError, match="one view"):
        miner(torch.rand(2, 3, 8, 8), "a red image")
    with pytest.raises(ValueError, match="NaN"):
        miner(torch.full((1, 3, 8, 8), float("nan")), "a red image")
    with pytest.raises(ValueError, match="prompt"):
        miner(torch.rand(1, 3, 8, 8), "  ")
    with pytest.raises(ValueError, match="unknown saliency signal"):
        RegionMiner(auditor, weights={"gradcamm": 1.0})
    with pytest.raises(ValueError, match="k must be >= 0"):
        RegionMiner(auditor, k=-1)


def test_fusion_is_a_tempered_noisy_or():
    a, b = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), 0.5)
    torch.testing.assert_close(fuse({"a": a, "b": b}, {"a": 1.0, "b": 1.0}), torch.full((1, 1, 2, 2), 0.75))
    torch.testing.assert_close(fuse({"a": a, "b": b}, {"a": 2.0, "b": 0.0}), a)
    half = fuse({"a": torch.ones(1, 1, 2, 2), "b": b}, {"a": 1.0, "b": 2.0})
    assert float(half.min()) > 0.999  # one sure signal is enough, whatever its weight
    assert fuse({"a": a}, {"a": 0.0}) is None


def test_word_cams_in_one_pass_equal_one_backward_per_word(auditor):
    """``word_cams`` (the image repeated T times, one backward) gives each word's Grad-CAM exactly as
    ``auditor_features`` does with one backward per word; it is what region prompts are chosen from."""
    from tipai_core.mining.saliency import word_cams

    words = prompt_words("a red field with a blue square")
    img = red_with_blue()
    batched = word_cams(auditor, img, words)
    one_by_one = auditor_features(auditor, img, "a red field with a blue square", words).text_cams[0]
    assert batched.shape == one_by_one.shape == (len(words), *one_by_one.shape[1:])
    assert torch.allclose(batched, one_by_one, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[words.index("red")], batched[words.index("blue")], atol=1e-3)
    with pytest.raises(ValueError, match="one image"):
        word_cams(auditor, img.expand(2, -1, -1, -1), words)
    with pytest.raises(ValueError, match="non-empty"):
        word_cams(auditor, img, [" "])
