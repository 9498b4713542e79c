"""(6) Seam quality B: LPIPS from a local backbone file, else the documented weight-free fallback; never a download."""

from __future__ import annotations

import logging
import urllib.request

import pytest
import torch

from tipai_core.auditor.seam import SeamQuality, ring_mask


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def tournament():
    """Control, the control itself, a subtle edit, and an edit with a hard seam at the mask boundary."""
    g = torch.Generator().manual_seed(0)
    control = (0.5 + 0.1 * torch.randn(3, 64, 64, generator=g)).clamp(0, 1)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    subtle = control.clone()
    subtle[:, 20:44, 20:44] += 0.02 * torch.randn(3, 24, 24, generator=g)
    seam = control.clone()
    seam[:, 16:48, 16:48] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    return torch.stack([control, control, subtle.clamp(0, 1), seam]), mask


def check_b(seam_quality: SeamQuality) -> torch.Tensor:
    images, mask = tournament()
    b = seam_quality(images, mask[None].expand(4, 1, 64, 64))
    assert b[0] == 1.0  # the control is unedited
    assert b[1] == pytest.approx(1.0, abs=1e-5)  # identical to the control: d = 0
    assert 0 < b[3] < b[2] < 1  # a hard seam scores below a subtle edit
    return b


def test_ring_is_the_band_around_the_boundary():
    m = torch.zeros(1, 1, 20, 20)
    m[..., 5:15, 5:15] = 1
    ring = ring_mask(m, 2)
    assert ring[0, 0, 10, 10] == 0 and ring[0, 0, 0, 0] == 0  # deep inside, far outside
    assert ring[0, 0, 5, 10] == 1 and ring[0, 0, 3, 10] == 1  # on the boundary, just outside
    assert ring.sum() == (14 * 14 - 6 * 6)


def test_fallback_without_a_file_warns_and_never_downloads(no_downloads, caplog):
    with caplog.at_level(logging.WARNING, logger="tipai_core.auditor.seam"):
        sq = SeamQuality(kappa=2.0)
    assert sq.mode == "dssim"
    assert any("fallback" in r.getMessage() and "LPIPS" in r.getMessage() for r in caplog.records)
    b = check_b(sq)
    sq.kappa = 4.0
    images, mask = tournament()
    b4 = sq(images, mask[None].expand(4, 1, 64, 64))
    assert torch.allclose(b4[1:], b[1:] ** 2, atol=1e-5)  # B = exp(-κ·d): doubling κ squares B


def test_lpips_backbone_from_a_local_file_is_used(no_downloads, tmp_path, caplog):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path / "alexnet.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with caplog.at_level(logging.WARNING, logger="tipai_core.auditor.seam"):
        sq = SeamQuality(kappa=2.0, lpips_backbone=path)
    assert sq.mode == "lpips" and not any("fallback" in r.getMessage() for r in caplog.records)
    lp = sq.lpips.state_dict()
    assert torch.equal(lp["net.slice1.0.weight"], state["features.0.weight"])
    assert torch.equal(lp["net.slice5.10.weight"], state["features.10.weight"])
    b_lpips = check_b(sq)
    b_fallback = check_b(SeamQuality(kappa=2.0))
    assert not torch.allclose(b_lpips[2:], b_fallback[2:])


def test_bad_lpips_files_fail_clearly(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="alex.pth"):
        SeamQuality(lpips_backbone=tmp_path / "alex.pth")
    junk = tmp_path / "junk.safetensors"
    save_file({"features.0.weight": torch.zeros(2, 2)}, str(junk))
    with pytest.raises(ValueError, match="junk.safetensors"):
        SeamQuality(lpips_backbone=junk)


def test_auditor_says_when_it_uses_the_fallback(tiny_clip_file, caplog, no_downloads):
    from tipai_core.auditor import TINY_ARCH, Auditor

    with caplog.at_level(logging.WARNING):
        aud = Auditor.from_files(tiny_clip_file, arch=TINY_ARCH)
    assert aud.seam.mode == "dssim"
    assert any("DSSIM fallback" in r.getMessage() for r in caplog.records)
