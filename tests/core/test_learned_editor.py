"""Stage B1, the learned local editor: its file, the trainer, the loop backend and the routing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tipai_core.auditor import TINY_ARCH
from tipai_core.auditor.data import write_pairs_parquet
from tipai_core.diffusion.conditioning import Conditioning
from tipai_core.diffusion.parametrisation import Parametrisation
from tipai_core.editing.diffusion_editor import DiffusionEditor
from tipai_core.editing.learned_editor import LearnedEditor, editor_input
from tipai_core.editing.learned_file import EditorIdentity, load_editor, save_editor
from tipai_core.editing.learned_net import EditorArch, EditorNet
from tipai_core.editing.routing import RoutedEditor
from tipai_core.policy.actions import Action
from tipai_core.protocols import EditContext
from tipai_core.records.costs import Costs
from tipai_core.testing.auditor_synthetic import write_tiny_open_clip
from tipai_core.train.editor import EditorSettings, mine_regions, train_editor

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}


def square_pairs(n: int, seed: int, size: int = 32, masks: bool = True) -> list[dict]:
    """A square whose colour the prompt names (chosen) or another colour (rejected), on a flat background:
    the region is the square, and only the prompt says what goes in it."""
    g = torch.Generator().manual_seed(seed)
    names = list(COLOURS)
    rows = []
    for _ in range(n):
        img = (0.3 + 0.4 * torch.rand(3, 1, 1, generator=g)).expand(3, size, size).clone()
        c = names[int(torch.randint(4, (1,), generator=g))]
        wrong = names[(names.index(c) + 1 + int(torch.randint(3, (1,), generator=g))) % 4]
        y, x = (int(v) for v in torch.randint(2, size - 10, (2,), generator=g))
        good, bad = img.clone(), img.clone()
        good[:, y : y + 8, x : x + 8] = torch.tensor(COLOURS[c]).view(3, 1, 1)
        bad[:, y : y + 8, x : x + 8] = torch.tensor(COLOURS[wrong]).view(3, 1, 1)
        row = {"Prompt": f"a {c} square", "Chosen": good, "Rejected": bad, "Category": "binding"}
        if masks:
            m = torch.zeros(1, size, size)
            m[:, y : y + 8, x : x + 8] = 1
            row["Mask"] = m
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    return write_tiny_open_clip(tmp_path_factory.mktemp("clip") / "clip.safetensors", seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pairs")
    return write_pairs_parquet(d / "train.parquet", square_pairs(160, 1)), write_pairs_parquet(
        d / "val.parquet", square_pairs(48, 2)
    )


def settings(data, clip_file, out, **kw) -> EditorSettings:
    base = dict(data=str(data[0]), val_data=str(data[1]), backbone=str(clip_file), arch=TINY_ARCH, out=str(out))
    base.update(width=16, epochs=6, lr=5e-3, device="cpu", image_size=32)
    base.update(kw)
    return EditorSettings(**base)


def test_the_trainer_learns_to_paint_what_the_prompt_says(tmp_path, data, clip_file, one_thread):
    out = tmp_path / "editor.safetensors"
    lines: list[str] = []
    res = train_editor(settings(data, clip_file, out), say=lambda *a: lines.append(" ".join(map(str, a))))
    # the mean colour of the four is the best guess without the prompt: L1 about 0.46 inside the square
    assert res.before["l1"] > 0.4
    assert res.after["l1"] < 0.15, res.after
    assert res.ceiling["l1"] == 0.0
    assert any("before (untrained)" in ln for ln in lines) and any("after (trained)" in ln for ln in lines)
    net, ident = load_editor(out)
    assert ident.family == "any" and ident.space == "rgb" and ident.text_encoder["name"] == "tipai-tiny-vit"
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert metrics["after"]["l1"] == pytest.approx(res.after["l1"])
    assert not (tmp_path / "editor.ckpt").exists()  # emptied when the run completes


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, data, clip_file):
    """SIGKILL a real ``python -m tipai_core.train editor`` after its first checkpoint, resume it, and get
    the weights of a run that was never stopped, bit for bit. That run goes through HF accelerate (one
    process) when it is installed, so the same equality also shows --accelerate trains the same steps."""
    args = ["--data", str(data[0]), "--val-data", str(data[1]), "--backbone", str(clip_file), "--arch", TINY_ARCH]
    args += ["--width", "8", "--epochs", "4", "--device", "cpu", "--image-size", "32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tipai_core.train", "editor"]
    whole = tmp_path / "whole.safetensors"
    import importlib.util

    acc = ["--accelerate"] if importlib.util.find_spec("accelerate") else []
    subprocess.run([*cmd, *args, "--out", str(whole), *acc], check=True, env=env, capture_output=True, timeout=600)
    killed = tmp_path / "killed.safetensors"
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [*cmd, *args, "--out", str(killed), "--checkpoint-dir", str(ckpt)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not (ckpt / "epoch-0001.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (ckpt / "epoch-0001.json").is_file() and not killed.exists()
    out = subprocess.run(
        [*cmd, *args, "--out", str(killed), "--checkpoint-dir", str(ckpt), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resumed from" in out.stdout
    a, b = load_file(str(whole)), load_file(str(killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rows_without_a_region_or_unreadable_are_skipped_and_counted(tmp_path, clip_file, one_thread):
    rows = square_pairs(20, 3, masks=False)
    rows[4]["Chosen"] = rows[4]["Rejected"].clone()  # equal images, no mask: no region
    train = write_pairs_parquet(tmp_path / "d" / "train.parquet", rows)
    import pandas as pd

    df = pd.read_parquet(train)
    df.at[7, "Chosen"] = {"bytes": b"not a png", "path": None}
    df.to_parquet(train)
    lines: list[str] = []
    res = train_editor(
        settings((train, None), clip_file, tmp_path / "e.safetensors", epochs=1, val_data=None, val_fraction=0.25),
        say=lambda *a: lines.append(" ".join(map(str, a))),
    )
    assert res.skipped == 2
    report = "\n".join(lines)
    assert "no region" in report and "row 7" in report


def test_mined_regions_are_the_cells_that_differ():
    a = torch.zeros(2, 3, 16, 16)
    b = a.clone()
    b[0, :, 4:8, 8:12] = 1.0  # one 4x4 cell of a 4x4 grid
    m = mine_regions(a, b, (4, 4), k=3)
    assert torch.equal(m[0, 0], (b[0, 0] > 0).float())  # only the cell that differs, though k = 3
    assert m[1].sum() == 0  # equal images: no region


def test_the_command_refuses_bad_settings_in_one_line(tmp_path, data, clip_file):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "tipai_core.train", "editor", "--data", str(data[0]), "--backbone", str(clip_file)]
    for extra, needle in (
        (["--out", str(tmp_path / "e.safetensors"), "--t-lo", "0.8", "--t-hi", "0.2"], "--t-lo 0.8 is above --t-hi"),
        (["--out", str(tmp_path / "e.pt")], "must name a .safetensors file"),
        (["--out", str(tmp_path / "e.safetensors"), "--lr", "nan"], "--lr"),
        (["--out", str(tmp_path / "e.safetensors"), "--strength-min", "0"], "--strength-min"),
    ):
        out = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stdout + out.stderr
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("[editor] error:") and needle in lines[0], out.stdout
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the file


def test_the_file_carries_its_identity_and_refuses_a_mismatch(tmp_path):
    torch.manual_seed(0)
    net = EditorNet(EditorArch(channels=3, text_dim=8, width=8))
    ident = EditorIdentity(
        net.arch, family="sd15", text_encoder={"name": "ViT-B-16", "embed_dim": 8}, t_band=(0.2, 0.8)
    )
    path = save_editor(tmp_path / "ed.safetensors", net, ident)
    back, ident2 = load_editor(path)
    assert ident2 == ident
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), back.state_dict().values()))
    ident2.check_family("sd15")
    with pytest.raises(ValueError, match="trained for the 'sd15' model family; the model here is 'sdxl'"):
        ident2.check_family("sdxl")
    with pytest.raises(ValueError, match="auditor here encodes text as"):
        ident2.check_text_encoder({"name": "ViT-L-14", "embed_dim": 8})
    with pytest.warns(UserWarning, match="outside its trained band"):
        assert ident2.clamp_t(0.95) == 0.8
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="no identity file ed.json"):
        load_editor(path)
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load_editor(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        load_editor(tmp_path / "ed.ckpt")


# ----------------------------------------------------------------------------- the backend


class Recorder:
    """A denoiser with a known answer, x̂0 = x / 2, counting its calls and rows."""

    def __init__(self):
        self.calls, self.rows = 0, 0

    def __call__(self, x, sigma, cond):
        self.calls += 1
        self.rows += x.shape[0]
        return x / 2


def backend(family="any", audit_call=True, seed=0):
    torch.manual_seed(seed)
    net = EditorNet(EditorArch(channels=4, text_dim=6, width=8))
    ident = EditorIdentity(net.arch, family=family)
    return LearnedEditor(net, ident, lambda p: torch.full((6,), float(len(p))), audit_call=audit_call)


def context(den, cfg=5.0):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 12, 12, generator=g)
    sig = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.0])
    return EditContext(den, Parametrisation.parse("eps"), sig, 2, x, x / 2, Conditioning(cfg=cfg), prompt="a red cube")


def region():
    m = torch.zeros(1, 1, 12, 12)
    m[..., 3:8, 4:9] = 1
    return m


def test_the_learned_candidates_are_the_control_outside_their_masks():
    den = Recorder()
    ctx = context(den)
    acts = [
        Action(editor="learned", seed=s, cfg_inside=5.0, dilation=d, feather=f)
        for s, d, f in ((1, 0, 0), (2, 1, 0), (3, 1, 2))
    ]
    res = backend()(ctx, region(), acts)
    out = res.masks == 0
    assert torch.equal(torch.where(out, res.latents, ctx.x), ctx.x.expand_as(res.latents))
    inside = (res.masks > 0).expand_as(res.latents)
    assert not torch.equal(res.latents[inside], ctx.x.expand_as(res.latents)[inside])
    assert not torch.equal(res.latents[0], res.latents[1])  # other seeds, other candidates
    assert (den.calls, den.rows) == (1, 3)  # one audit call for the whole group
    assert torch.equal(res.x0, res.latents / 2)  # that call's x̂0 is the audit view
    assert res.costs == Costs(editor_calls=1, editor_images=3)  # w = 5/5 = 1 for all: one forward


def test_inside_cfg_guides_against_the_null_branch():
    den = Recorder()
    ed = backend(audit_call=False)
    ctx = context(den, cfg=5.0)
    plain = ed(ctx, region(), [Action(editor="learned", seed=1, cfg_inside=5.0)])
    strong = ed(ctx, region(), [Action(editor="learned", seed=1, cfg_inside=10.0)])
    assert den.calls == 0 and strong.costs == Costs(editor_calls=2, editor_images=2)
    # the closed form: Î = Î_∅ + 2·(Î_p − Î_∅), composed exactly as the backend does
    view = ctx.x0
    hard = (region() > 0).float()
    noise = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(1))
    xin = editor_input(view, hard, noise, 1.0)
    t = torch.full((1,), 2 / 4)
    with torch.no_grad():
        cond = ed.net(xin, hard, torch.full((1, 6), 10.0), t)
        null = ed.net(xin, hard, None, t)
    want = torch.where(hard > 0, null + 2.0 * (cond - null), view)
    assert torch.allclose(strong.x0, want, atol=1e-6)
    assert torch.allclose(plain.x0, torch.where(hard > 0, cond, view), atol=1e-6)
    both = ed(
        ctx,
        region(),
        [Action(editor="learned", seed=1, cfg_inside=5.0), Action(editor="learned", seed=1, cfg_inside=10.0)],
    )
    assert both.costs == Costs(editor_calls=2, editor_images=3)  # the null branch on the guided row only
    assert torch.allclose(both.x0[:1], plain.x0, atol=1e-6) and torch.allclose(both.x0[1:], strong.x0, atol=1e-6)


def test_routing_sends_each_action_to_its_editor_in_order():
    den = Recorder()
    ctx = context(den)
    learned = backend()
    acts = [Action(editor=e, depth=1, seed=k, cfg_inside=5.0) for k, e in enumerate(("renoise", "learned", "renoise"))]
    mixed = RoutedEditor(DiffusionEditor(), learned)(ctx, region(), acts)
    alone_d = DiffusionEditor()(ctx, region(), [acts[0], acts[2]])
    alone_l = learned(ctx, region(), [acts[1]])
    assert torch.equal(mixed.latents[[0, 2]], alone_d.latents) and torch.equal(mixed.latents[1:2], alone_l.latents)
    assert mixed.costs == Costs(editor_calls=1, editor_images=1)
    forced = RoutedEditor(DiffusionEditor(), learned, force="learned")(ctx, region(), acts)
    assert forced.costs.editor_images == 3
    with pytest.raises(ValueError, match="diffusion editor cannot make it"):
        DiffusionEditor()(ctx, region(), [Action(editor="learned")])


def test_the_backend_refuses_bad_input():
    ctx = context(Recorder())
    ed = backend()
    with pytest.raises(ValueError, match="all zero"):
        ed(ctx, torch.zeros(1, 1, 12, 12), [Action(editor="learned")])
    with pytest.raises(ValueError, match="region_mask"):
        ed(ctx, torch.ones(1, 1, 6, 6), [Action(editor="learned")])
    with pytest.raises(ValueError, match="prompt"):
        ed(
            EditContext(ctx.denoiser, ctx.param, ctx.sigmas, 2, ctx.x, ctx.x0, ctx.cond, prompt=" "),
            region(),
            [Action()],
        )
    wrong = LearnedEditor(
        EditorNet(EditorArch(channels=3, text_dim=6, width=8)),
        EditorIdentity(EditorArch(3, 6, 8)),
        lambda p: torch.zeros(6),
    )
    with pytest.raises(ValueError, match="3-channel rgb images; the view here has 4 channels"):
        wrong(ctx, region(), [Action()])
    with pytest.raises(ValueError, match="strength"):
        LearnedEditor(ed.net, ed.identity, ed.text_features, strength=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ed(ctx, region(), [Action()])  # t = 0.5 inside the default band: no warning


def test_tspo_prices_a_learned_candidate_at_its_one_audit_row():
    """A policy whose editor knob holds "learned" trades it against the diffusion kinds at their costs."""
    from tipai_core.policy.policy_net import PolicyNet, feature_names
    from tipai_core.policy.tspo import candidate_cost, expected_cost

    assert candidate_cost(3, "learned") == 1.0 and candidate_cost(3, "renoise") == 4.0
    assert candidate_cost(3, "invert") == 7.0
    pol = PolicyNet({"editor": ("renoise", "learned"), "depth": (1, 3)}, n_classes=1)
    feats = torch.zeros(2, len(feature_names(1)))
    table = pol.log_probs_table(feats)
    pe, pd = table["editor"].exp(), table["depth"].exp()
    want = pd[:, 0] * (pe[:, 0] * 2 + pe[:, 1] * 1) + pd[:, 1] * (pe[:, 0] * 4 + pe[:, 1] * 1)
    assert torch.allclose(expected_cost(pol, table), want)
