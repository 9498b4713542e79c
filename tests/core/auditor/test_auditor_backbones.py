"""(1) Backbones load from real files; missing or mismatched files fail clearly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tipai_core.auditor import TINY_ARCH, Auditor, load_hf_clip, load_open_clip


def test_open_clip_weights_come_from_the_file(tiny_clip_file):
    bb = load_open_clip(TINY_ARCH, tiny_clip_file)
    state = load_file(str(tiny_clip_file))
    for key in ("visual.conv1.weight", "token_embedding.weight", "visual.proj"):
        assert torch.equal(bb.model.state_dict()[key], state[key]), key
    g, z = bb.encode_image(torch.rand(2, 3, 50, 70))
    assert g.shape == (2, 32) and z.shape == (2, 4, 4, 32)
    assert torch.allclose(g.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_open_clip_torch_checkpoint_is_read_with_weights_only(tiny_clip_file, tmp_path):
    state = load_file(str(tiny_clip_file))
    ckpt = tmp_path / "tiny.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, ckpt)
    bb = load_open_clip(TINY_ARCH, ckpt)
    assert torch.equal(bb.model.state_dict()["visual.conv1.weight"], state["visual.conv1.weight"])
    # An object that is not plain tensors is refused by weights_only=True.
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "hook": torch.nn.Linear(2, 2)}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        load_open_clip(TINY_ARCH, evil)


def test_missing_files_name_the_path(tmp_path):
    missing = tmp_path / "models" / "tipai" / "clip.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)) as info:
        Auditor.from_files(missing, arch=TINY_ARCH)
    assert f"'clip.safetensors' in the folder {missing.parent}" in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_hf_clip(tmp_path / "nope")


def test_weights_of_another_architecture_fail_clearly(tiny_clip_file, tmp_path):
    state = load_file(str(tiny_clip_file))
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("visual.transformer")}, str(bad))
    with pytest.raises(ValueError, match="does not match open_clip architecture"):
        load_open_clip(TINY_ARCH, bad)
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_open_clip("no-such-arch", tiny_clip_file)


def test_hf_clip_folder_loads_and_scores(hf_clip_dir):
    aud = Auditor.from_files(hf_clip_dir)
    assert aud.backbone.identity() == {"kind": "hf_clip", "name": hf_clip_dir.name, "embed_dim": 16}
    from safetensors.torch import load_file as lf

    file_state = lf(str(next(hf_clip_dir.glob("*.safetensors"))))
    key = next(k for k in file_state if k.endswith("visual_projection.weight"))
    assert torch.equal(aud.backbone.model.state_dict()[key.removeprefix("model.")], file_state[key])
    scores = aud.score(torch.rand(3, 3, 40, 40), "a red square")
    assert scores.S.shape == (3,) and scores.P.shape == (3, 5)
    assert aud.risk_maps(torch.rand(2, 3, 40, 40)).shape == (2, 5, 40, 40)


def test_hf_clip_folder_without_tokenizer_names_what_is_missing(hf_clip_dir, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json",):
        shutil.copy(hf_clip_dir / name, bare / name)
    for f in hf_clip_dir.glob("*.safetensors"):
        shutil.copy(f, bare / f.name)
    with pytest.raises(FileNotFoundError, match="no tokenizer in .*bare"):
        load_hf_clip(bare)
