"""(2) One batched forward for control + N; (5) bad inputs; the score formulas and the text cache."""

from __future__ import annotations

import pytest
import torch

from tipai_core.protocols import AuditScores


def count_image_forwards(aud):
    calls: list[int] = []
    handle = aud.backbone.image_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    return calls, handle


def test_control_and_candidates_share_one_image_forward(zero_shot_auditor):
    aud = zero_shot_auditor
    images = torch.rand(5, 3, 72, 64)  # C_0 + 4 candidates
    mask = torch.zeros(72, 64)
    mask[10:40, 12:44] = 1
    calls, handle = count_image_forwards(aud)
    try:
        scores = aud.score(images, "a red square on grey", mask)
        result = aud.audit(images, "a red square on grey", mask)
    finally:
        handle.remove()
    assert calls == [5, 5]  # one E_i call per score/audit, holding all 5 images
    assert isinstance(scores, AuditScores) and len(scores) == 5
    assert scores.P.shape == (5, 5) and scores.classes == aud.classes
    assert scores.B[0] == 1.0 and (scores.B[1:] < 1.0).all()
    assert ((scores.P >= 0) & (scores.P <= 1)).all() and ((scores.F >= 0) & (scores.F <= 1)).all()
    assert result.risk_maps.shape == (5, 5, 72, 64)
    assert torch.allclose(result.scores.S, scores.S)


def test_zero_shot_scores_follow_the_formulas(zero_shot_auditor):
    aud = zero_shot_auditor
    images = torch.rand(3, 3, 64, 64)
    prompt = "a blue square"
    scores = aud.score(images, prompt)
    with torch.no_grad():
        g, z = aud.backbone.encode_image(images)
        t = aud.backbone.encode_text([prompt])[0]
        s = aud.backbone.logit_scale()
    assert torch.allclose(scores.S, s * (g @ t), atol=1e-4)  # S = s·⟨e_I, e_t⟩
    assert torch.allclose(scores.S_R, s * (z @ t).flatten(1).mean(1), atol=1e-4)  # no mask: all patches
    assert torch.allclose(scores.F, (2.5 * (g @ t)).clamp(0, 1), atol=1e-5)
    assert torch.allclose(scores.B, torch.ones(3))  # no mask: no seam


def test_region_score_uses_only_the_masked_patches(zero_shot_auditor):
    aud = zero_shot_auditor
    images = torch.rand(2, 3, 64, 64)
    prompt = "a green square"
    mask = torch.zeros(1, 64, 64)
    mask[:, :16, :16] = 1  # exactly the top-left patch of the 4x4 grid
    scores = aud.score(images, prompt, mask)
    with torch.no_grad():
        _, z = aud.backbone.encode_image(images)
        t = aud.backbone.encode_text([prompt])[0]
    assert torch.allclose(scores.S_R, aud.backbone.logit_scale() * (z[:, 0, 0] @ t), atol=1e-4)
    per_sample = torch.zeros(2, 1, 64, 64)
    per_sample[0, :, :16, :16] = 1
    per_sample[1, :, 48:, 48:] = 1
    s2 = aud.score(images, prompt, per_sample)
    assert torch.allclose(s2.S_R[1], aud.backbone.logit_scale() * (z[1, 3, 3] @ t), atol=1e-4)


def test_text_features_are_cached_per_prompt(zero_shot_auditor):
    aud = zero_shot_auditor
    before = aud.text_cache.misses
    aud.score(torch.rand(2, 3, 64, 64), "a cached prompt")
    aud.score(torch.rand(4, 3, 64, 64), "a cached prompt")
    assert aud.text_cache.misses == before + 1
    assert "a cached prompt" in aud.text_cache


def test_bad_inputs_raise_value_error(zero_shot_auditor):
    aud = zero_shot_auditor
    ok = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="prompt"):
        aud.score(ok, "   ")
    nan = ok.clone()
    nan[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        aud.score(nan, "a red square")
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        aud.score(ok * 255, "a red square")
    with pytest.raises(ValueError, match="mask"):
        aud.score(ok, "a red square", torch.ones(3, 1, 64, 64))


def test_auditor_is_a_module_for_the_memory_manager(zero_shot_auditor):
    aud = zero_shot_auditor
    assert isinstance(aud.model, torch.nn.Module) and aud.model is aud
    assert aud.dtype == torch.float32 and aud.device.type == "cpu"
    n_params = sum(p.numel() for p in aud.parameters())
    assert n_params > sum(p.numel() for p in aud.backbone.parameters())  # heads are part of the module


def test_custom_zero_shot_classes(tiny_clip_file):
    from tipai_core.auditor import TINY_ARCH, Auditor

    aud = Auditor.from_files(tiny_clip_file, arch=TINY_ARCH, classes={"gore": ["blood everywhere"]})
    scores = aud.score(torch.rand(2, 3, 64, 64), "a red square")
    assert scores.classes == ("gore",) and scores.P.shape == (2, 1)
    with pytest.raises(ValueError):
        Auditor.from_files(tiny_clip_file, arch=TINY_ARCH, classes={"gore": []})


def test_similarity_is_differentiable(zero_shot_auditor):
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    zero_shot_auditor.similarity(x, "a red square").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_images_of_any_channel_count_dtype_and_size(zero_shot_auditor):
    aud = zero_shot_auditor
    g = torch.Generator().manual_seed(4)
    rgb = torch.rand(2, 3, 48, 80, generator=g)
    grey = torch.rand(2, 1, 48, 80, generator=g)
    prompt = "a red square"

    def S(x):
        return aud.score(x, prompt).S

    assert torch.allclose(S(grey), S(grey.expand(-1, 3, -1, -1)), atol=1e-5)  # 1 channel = grey RGB
    alpha = torch.rand(2, 1, 48, 80, generator=g)
    over_white = rgb * alpha + (1 - alpha)
    assert torch.allclose(S(torch.cat([rgb, alpha], 1)), S(over_white), atol=1e-5)  # RGBA over white
    assert torch.allclose(S(torch.cat([grey, alpha], 1)), S(grey * alpha + 1 - alpha), atol=1e-5)  # LA
    assert torch.allclose(S(torch.cat([rgb, torch.ones_like(alpha)], 1)), S(rgb), atol=1e-5)  # opaque = RGB
    u8 = (rgb * 255).round().to(torch.uint8)
    assert torch.allclose(S(u8), S(u8.float() / 255), atol=1e-5)  # uint8 is /255
    assert torch.allclose(S(rgb[0]), S(rgb[:1]), atol=1e-5)  # one image [C,H,W]
    with pytest.raises(ValueError, match="channels last"):
        aud.score(rgb.permute(0, 2, 3, 1), prompt)  # a ComfyUI IMAGE
    with pytest.raises(ValueError, match="C in 1..4"):
        aud.score(torch.rand(1, 5, 32, 32), prompt)


def test_pil_images_of_any_size_and_mode_in_one_forward(zero_shot_auditor):
    import numpy as np
    from PIL import Image

    aud = zero_shot_auditor
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 256, (90, 30, 4), dtype=np.uint8), "RGBA")
    grey16 = Image.fromarray(rng.integers(0, 65536, (33, 33), dtype=np.uint16))
    assert grey16.mode.startswith("I")
    calls, handle = count_image_forwards(aud)
    try:
        scores = aud.score([rgb, rgba, grey16, rgb.convert("L")], "a red square")
    finally:
        handle.remove()
    assert calls == [4] and scores.S.shape == (4,) and torch.isfinite(scores.S).all()
    # the control's score does not depend on what else is in the batch, nor on being a PIL image
    alone = aud.score(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1), "a red square")
    assert scores.S[0] == pytest.approx(float(alone.S[0]), abs=1e-4)
    mask = torch.zeros(40, 60)
    mask[:20] = 1
    assert aud.audit([rgb, rgba], "a red square", mask).risk_maps.shape == (2, 5, 40, 60)  # first image's size
