"""Trained heads: untrained heads are the zero-shot auditor; files round-trip; mismatches fail clearly."""

from __future__ import annotations

import json

import pytest
import torch

from tipai_core.auditor import TINY_ARCH, Auditor, load_heads, save_heads


def perturbed_heads(aud):
    heads = aud.heads
    torch.manual_seed(1)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(0.05 * torch.randn_like(p))
    heads.config.trained = True
    heads.set_faithfulness_calibration(0.7, -0.2)
    return heads


def test_heads_round_trip_through_files(tiny_clip_file, tmp_path):
    aud = Auditor.from_files(tiny_clip_file, arch=TINY_ARCH)
    images, mask = torch.rand(3, 3, 64, 64), torch.zeros(64, 64)
    mask[8:40, 8:40] = 1
    zero = aud.audit(images, "a red square", mask)
    perturbed_heads(aud)
    trained = aud.audit(images, "a red square", mask)
    assert not torch.allclose(zero.scores.S, trained.scores.S)
    path = save_heads(aud.heads, tmp_path / "heads.safetensors")
    cfg = json.loads(path.with_suffix(".json").read_text())
    assert cfg["backbone"] == {"kind": "open_clip", "name": TINY_ARCH, "embed_dim": 32}
    assert cfg["schema_version"] == 1 and list(cfg["policy"]["prompts"]) == list(aud.classes)

    loaded = Auditor.from_files(tiny_clip_file, arch=TINY_ARCH, heads=path)
    assert not loaded.zero_shot
    again = loaded.audit(images, "a red square", mask)
    for name in ("S", "S_R", "F", "P", "B"):
        assert torch.allclose(getattr(again.scores, name), getattr(trained.scores, name), atol=1e-5), name
    assert torch.allclose(again.risk_maps, trained.risk_maps, atol=1e-5)
    # F is the calibrated σ(a·S + b) now
    assert torch.allclose(again.scores.F, torch.sigmoid(0.7 * again.scores.S - 0.2), atol=1e-5)


def test_heads_for_another_backbone_are_refused(tiny_clip_file, hf_clip_dir, tmp_path):
    aud = Auditor.from_files(tiny_clip_file, arch=TINY_ARCH)
    path = save_heads(aud.heads, tmp_path / "heads.safetensors")
    with pytest.raises(ValueError, match="trained for backbone .*open_clip.*loaded backbone is .*hf_clip"):
        Auditor.from_files(hf_clip_dir, heads=path)
    cfg = json.loads(path.with_suffix(".json").read_text())
    cfg["backbone"]["name"] = "ViT-L-14"
    path.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="ViT-L-14"):
        load_heads(path, aud.backbone.identity())
    cfg["backbone"]["name"] = TINY_ARCH
    cfg["schema_version"] = 99
    path.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="schema version 99"):
        load_heads(path, aud.backbone.identity())


def test_missing_heads_config_names_it(tiny_clip_file, tmp_path):
    aud = Auditor.from_files(tiny_clip_file, arch=TINY_ARCH)
    path = save_heads(aud.heads, tmp_path / "h.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"h\.json"):
        load_heads(path, aud.backbone.identity())


def test_a_failed_save_keeps_the_old_heads_and_leaves_no_temp(tiny_clip_file, tmp_path, monkeypatch):
    import safetensors.torch

    aud = Auditor.from_files(tiny_clip_file, arch=TINY_ARCH)
    path = save_heads(aud.heads, tmp_path / "heads.safetensors")
    before = path.read_bytes(), path.with_suffix(".json").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    perturbed_heads(aud)
    with pytest.raises(OSError, match="disk full"):
        save_heads(aud.heads, path)
    assert (path.read_bytes(), path.with_suffix(".json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.json", "heads.safetensors"]
