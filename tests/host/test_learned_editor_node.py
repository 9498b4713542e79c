"""The learned editor (Stage B1) in a real ComfyUI: a file that ``python -m tipai_core.train editor``'s trainer
wrote into the instance's models/tipai, used by TiPAI Auditor Inpaint (standalone and in the loop) on the tiny
SD1.5 checkpoint, with the host's tiny auditor as its text encoder."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from tipai_core.auditor.data import write_pairs_parquet

STEPS = 6
PROMPT = "a red circle left of a blue square"


def _pairs(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        img = torch.rand(3, 1, 1, generator=g).expand(3, 32, 32).clone()
        good, bad = img.clone(), img.clone()
        y, x = (int(v) for v in torch.randint(0, 24, (2,), generator=g))
        good[0, y : y + 8, x : x + 8] = 1.0
        bad[2, y : y + 8, x : x + 8] = 1.0
        m = torch.zeros(1, 32, 32)
        m[:, y : y + 8, x : x + 8] = 1
        rows.append({"Prompt": "a red square", "Chosen": good, "Rejected": bad, "Category": "binding", "Mask": m})
    return rows


def _train(tmp, comfy_dir, tiny_auditor, name: str, family: str) -> str:
    from tipai_core.train.editor import EditorSettings, train_editor

    data = write_pairs_parquet(tmp / f"{name}.parquet", _pairs(24, 1))
    out = comfy_dir / "models" / "tipai" / f"{name}.safetensors"
    train_editor(
        EditorSettings(
            data=str(data),
            backbone=str(comfy_dir / "models" / "tipai" / tiny_auditor),
            arch="tipai-tiny-vit",
            out=str(out),
            family=family,
            epochs=1,
            width=8,
            image_size=32,
            device="cpu",
        ),
        say=lambda *a: None,
    )
    return out.name


@pytest.fixture(scope="module")
def learned_file(tmp_path_factory, comfy_dir, tiny_auditor) -> str:
    return _train(tmp_path_factory.mktemp("b1"), comfy_dir, tiny_auditor, "test-b1-sd15", "sd15")


@pytest.fixture(scope="module")
def node(comfy_inproc):
    return comfy_inproc.node_class


@pytest.fixture(scope="module")
def auditor(node, tiny_auditor):
    return node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]


@pytest.fixture(scope="module")
def sd(tiny_sd):
    return tiny_sd(PROMPT)


def _policy(node, n=3, editor="invert"):
    return node("TiPAITSPOSampler").execute(n, 0, "1, 2", "5.0, 8.0", "0.0", "0, 1", "0", editor).args[0]


def _editor(node, backend, learned):
    return node("TiPAIAuditorInpaint").execute(backend, 0, 2, "vae", learned_editor=learned).args[0]


def test_the_file_is_listed_as_an_editor_and_only_there(pack, learned_file, tiny_auditor):
    files = importlib.import_module(pack.__name__ + ".nodes.model_files")
    assert learned_file in files.list_kind("editor")
    assert learned_file not in files.list_kind("backbone") and tiny_auditor not in files.list_kind("editor")


def test_standalone_learned_candidates_keep_the_latent_outside_their_masks(pack, sd, node, auditor, learned_file):
    editor_node = importlib.import_module(pack.__name__ + ".nodes.editor_node")
    settings = importlib.import_module(pack.__name__ + ".nodes.settings")
    torch.manual_seed(0)
    image = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 16:40] = 1.0
    n = 4
    spec = settings.EditorSpec("learned", 0, 2, "vae", learned_file)
    images, _, found = editor_node.standalone_candidates(
        sd["model"], sd["pos"], sd["neg"], sd["vae"], image, mask, spec, _policy(node, n), 8, "normal", 5.0,
        auditor, "a red square",
    )  # fmt: skip
    res, z = found["res"], found["z"]
    assert images.shape == (n + 1, 3, 64, 64) and res.candidates.shape[0] == n
    outside = (res.masks == 0).expand_as(res.candidates)
    assert outside.any() and torch.equal(res.candidates[outside], z.expand_as(res.candidates)[outside])
    inside = (res.masks > 0).expand_as(res.candidates)
    assert not torch.equal(res.candidates[inside], z.expand_as(res.candidates)[inside])
    assert not torch.equal(res.candidates[0], res.candidates[1])  # N seeds, N candidates


def test_the_node_makes_n_learned_candidates(sd, node, auditor, learned_file):
    torch.manual_seed(0)
    image = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 16:40] = 1.0
    out = node("TiPAIAuditorInpaint").execute(
        "learned", 0, 2, "vae", sd["model"], sd["pos"], sd["neg"], sd["vae"], image, mask, _policy(node, 3), 8,
        "normal", 5.0, auditor, None, "a red square", learned_file,
    )  # fmt: skip
    _, candidates, best, table = out.args
    assert candidates.shape == (4, 64, 64, 3)
    diff = (candidates[1:] - candidates[:1]).abs()
    assert diff[:, 20:36, 20:36].mean() > 5 * diff[:, :4, :4].mean()
    assert len(json.loads(table)["candidates"]) == 4


def _ksampler(node, sd, auditor, editor, delta, policy):
    guard = node("TiPAITournamentGuard").execute(delta, 0.0, 0.0, 0.0, 0.0, 1.0, 2, 2, 1, "1.0").args[0]
    miner = node("TiPAIRegionMiner").execute(1, 0.6, 0.02, 0.5, 2, 1.0, 1.0, None).args[0]
    out = node("TiPAIKSampler").execute(
        sd["model"], 5, STEPS, 5.0, "euler", "normal", sd["pos"], sd["neg"], sd["latent"], 1.0, PROMPT, sd["vae"],
        auditor, miner, editor, guard, policy,
    )  # fmt: skip
    return out.args[0]["samples"], out.args[1]


def _plain(comfy_inproc, sd):
    return comfy_inproc.nodes.common_ksampler(
        sd["model"], 5, STEPS, 5.0, "euler", "normal", sd["pos"], sd["neg"], sd["latent"]
    )[0]["samples"]


@pytest.mark.parametrize("backend,editor", [("learned", "invert"), ("mixed", "all")])
def test_the_loop_with_the_learned_backend(comfy_inproc, sd, node, auditor, learned_file, backend, editor):
    spec = _editor(node, backend, learned_file)
    policy = _policy(node, 4, editor)
    kept, report = _ksampler(node, sd, auditor, spec, 1000.0, policy)
    assert torch.equal(kept, _plain(comfy_inproc, sd))  # nothing accepted: KSampler's latent, bit for bit
    recs = report["records"]
    assert recs and report["summary"]["accepted"] == 0
    acts = [a for r in recs for a in r["actions"]]
    mine = acts if backend == "learned" else [a for a in acts if a["editor"] == "learned"]
    # one row per candidate through the net, and one more for each guided one (inside CFG 8 against the base 5)
    assert sum(r["costs"]["editor_images"] for r in recs) == sum(1 + (a["cfg_inside"] != 5.0) for a in mine)
    if backend == "mixed":
        assert 0 < len(mine) < len(acts)  # a real mix: the policy drew both kinds
    edited, report = _ksampler(node, sd, auditor, spec, 0.0, policy)
    assert report["summary"]["accepted"] > 0 and not torch.equal(edited, kept)


def test_a_file_for_another_family_is_refused_before_sampling(tmp_path, comfy_dir, tiny_auditor, sd, node, auditor):
    other = _train(tmp_path, comfy_dir, tiny_auditor, "test-b1-sdxl", "sdxl")
    spec = _editor(node, "learned", other)
    with pytest.raises(ValueError, match=r"TiPAI KSampler: test-b1-sdxl.safetensors: .*'sdxl'.*'sd15'"):
        _ksampler(node, sd, auditor, spec, 1000.0, _policy(node))
    with pytest.raises(ValueError, match="needs a learned_editor file"):
        _editor(node, "learned", "none")


def test_the_taesd_round_trip(comfy_inproc, comfy_dir, sd, node, auditor, learned_file):
    """audit_decoder 'taesd': the learned editor decodes and encodes with TAESD from models/vae_approx (both
    files needed; a missing encoder is named with its folder)."""
    from safetensors.torch import save_file
    from tiny_families import taesd_state_dicts

    enc, dec = taesd_state_dicts(4)
    folder = comfy_dir / "models" / "vae_approx"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "taesd_encoder.safetensors", folder / "taesd_decoder.safetensors"]
    try:
        save_file(dec, str(paths[1]))
        spec = node("TiPAIAuditorInpaint").execute("learned", 0, 2, "taesd", learned_editor=learned_file).args[0]
        with pytest.raises(FileNotFoundError, match=r"no TAESD file 'taesd_encoder\.\*' in the models/vae_approx"):
            _ksampler(node, sd, auditor, spec, 1000.0, _policy(node, 2))
        save_file(enc, str(paths[0]))
        kept, report = _ksampler(node, sd, auditor, spec, 1000.0, _policy(node, 2))
        assert torch.equal(kept, _plain(comfy_inproc, sd)) and report["summary"]["candidates"] > 0
        assert sum(r["costs"]["editor_images"] for r in report["records"]) > 0
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
