"""(2) One batched forward for control + N; (5) bad inputs; the score formulas and the text cache."""

from __future__ import annotations

import pytest
import torch

from tipai_core.scores import AuditScores


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
    assert torch.allclose(scores.S, s * (g @ t), atol=1e-4)                       # S = s·⟨e_I, e_t⟩
    assert torch.allclose(scores.S_R, s * (z @ t).flatten(1).mean(1), atol=1e-4)  # no mask: all patches
    assert torch.allclose(scores.F, (2.5 * (g @ t)).clamp(0, 1), atol=1e-5)
    assert torch.allclose(scores.B, torch.ones(3))                                # no mask: no seam


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
