"""ShapesWorld base model: Denoiser protocol, CFG map, training, checkpoint, resume, sampling (CI size)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tipai_core.diffusion.conditioning import Conditioning
from tipai_core.protocols import AuditDecoder, Denoiser
from tipai_core.worlds.shapes.generate import generate
from tipai_core.worlds.shapes.grammar import tokenize
from tipai_core.worlds.shapes.model import ModelConfig, PixelDecoder, ShapesDenoiser, ShapesUNet
from tipai_core.worlds.shapes.train import TrainConfig, load_model, recipe_dir, train

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ModelConfig(size=16, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2)
CFG = TrainConfig(model=TINY, batch=8, warmup=2)


def _random_model(seed=0):
    torch.manual_seed(seed)
    m = ShapesUNet(TINY)
    with torch.no_grad():  # the output conv starts at zero; make the prediction depend on everything
        for p in m.out.parameters():
            p.normal_(0, 0.1)
    return m.eval()


def test_denoiser_protocol_empty_prompt_and_cfg_map():
    m = _random_model()
    d = ShapesDenoiser(m)
    assert isinstance(d, Denoiser) and isinstance(PixelDecoder(), AuditDecoder)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 5
    s = torch.tensor(5.0)
    # every prompt of a CFG-dropout batch is empty: the <bos> key keeps attention finite
    empty = torch.tensor([tokenize("")] * 2)
    assert torch.isfinite(m(x, s.expand(2), empty)).all()
    u = d(x, s, None)
    c1 = d(x, s, Conditioning(payload="a red circle", cfg=1.0))
    c3 = d(x, s, Conditioning(payload="a red circle", cfg=3.0))
    assert torch.isfinite(c3).all() and not torch.allclose(u, c1)
    assert torch.allclose(c3, u + 3 * (c1 - u), atol=1e-5)  # D = D_u + w·(D_c - D_u)
    # per-pixel map: w = 1 on the left half, 0 on the right half
    w = torch.zeros(1, 1, 16, 16)
    w[..., :8] = 1
    mixed = d(x, s, Conditioning(payload="a red circle", cfg=w))
    assert torch.allclose(mixed[..., :8], c1[..., :8], atol=1e-6)
    assert torch.allclose(mixed[..., 8:], u[..., 8:], atol=1e-6)
    # at σ → 0 the x0 prediction is x itself (x0 = x - σ·ε̂)
    assert torch.allclose(d(x, torch.tensor(1e-6), None), x, atol=1e-4)


def test_region_prompt_only_inside_the_mask():
    d = ShapesDenoiser(_random_model())
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    s = torch.tensor(2.0)
    m = torch.zeros(1, 1, 16, 16)
    m[..., 4:12, 4:12] = 1
    base = Conditioning(payload="a red circle", cfg=2.0)
    reg = base.with_region(m, torch.tensor([2.0]), torch.tensor([1.0]), region_payload="a blue square")
    out = d(x, s, reg)
    ref_base = d(x, s, base)
    ref_region = d(x, s, Conditioning(payload="a blue square", cfg=2.0))
    assert torch.allclose(out[..., 0:4, :], ref_base[..., 0:4, :], atol=1e-6)
    assert torch.allclose(out[..., 4:12, 4:12], ref_region[..., 4:12, 4:12], atol=1e-6)


def test_train_checkpoint_resume_reload_and_sample(tmp_path):
    a = train(CFG, 4, tmp_path / "a", ckpt_every=2, log=lambda *_: None)
    assert a == recipe_dir(CFG, tmp_path / "a") and (a / "model.json").is_file()
    meta = json.loads((a / "model.json").read_text())
    assert meta["step"] == 4 and meta["recipe"] == CFG.recipe_hash()
    # 2 steps, stop, resume to 4: bit-identical to 4 straight steps (every draw is a function of (seed, step))
    b_root = tmp_path / "b"
    train(CFG, 2, b_root, ckpt_every=1, log=lambda *_: None)
    b = train(CFG, 4, b_root, ckpt_every=1, log=lambda *_: None)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # reload: the loaded module holds exactly the file's tensors
    model, meta = load_model(a)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], wa[k]) for k in wa)
    assert not all(torch.equal(sd[k], ShapesUNet(TINY).state_dict()[k]) for k in wa)  # it did train
    img = generate(model, "a red circle left of a blue square", seed=3, steps=4, cfg=3.0)
    assert img.shape == (3, 16, 16) and torch.isfinite(img).all()
    assert torch.equal(img, generate(model, "a red circle left of a blue square", seed=3, steps=4, cfg=3.0))
    # another recipe lives in another folder
    assert recipe_dir(TrainConfig(model=TINY, batch=4), tmp_path) != recipe_dir(CFG, tmp_path)


def test_batches_rendered_ahead_train_the_same_model(tmp_path):
    """--workers renders batches in other processes; a batch is a pure function of its step, so the
    weights are torch.equal to rendering them in order here."""
    cfg = TrainConfig(model=TINY, batch=8, warmup=2)
    ahead, _ = load_model(train(cfg, 4, tmp_path / "a", log=lambda *_: None, workers=2))
    inline, _ = load_model(train(cfg, 4, tmp_path / "b", log=lambda *_: None, workers=0))
    sa, sb = ahead.state_dict(), inline.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
