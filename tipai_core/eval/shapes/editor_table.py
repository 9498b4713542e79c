"""``python -m tipai_core.eval shapes --learned-editor``: Stage B1's editor against the diffusion editor.

1. Pairs: in-place edits of the world (``PAIR_KINDS["local"]``: one region differs, the rest is equal,
   most degraded alike like mid-sampling previews), from the pair stream's training seeds, with every
   pair whose prompt is among the held-out prompts dropped (the editor never sees an evaluation prompt)
   and every pair that differs on more than ``MAX_EDIT_AREA`` of the image (no in-place edit existed).
   Each pair's Mask is the edit's own pixels dilated by one: the world knows the region exactly.
2. The editor is trained by the real trainer (``train.editor.train_editor``, what ``python -m
   tipai_core.train editor`` runs) against the learned auditor, into ``<cache>/shapes/editor-<key>/``;
   a folder that holds its file is reused.
3. The loop runs on the held-out prompts with the learned auditor and miner, the same guard, schedule
   and knobs, once per editor row: the diffusion editor at N, the learned editor at N, and the learned
   editor at the N that spends the diffusion editor's denoiser evaluations per tournament.

The bar, last: best-of-N with the same learned judge at the diffusion editor's denoiser evaluations per
image, and the paired differences of the equal-evals learned row against the diffusion editor and it.

Per row: accuracy and its change from plain (bootstrap intervals over prompts), tournaments holding a
winner by the checker, accepted edits, denoiser evaluations and editor forwards per image, and, over
every candidate of every tournament, against the control's view in the region: Δr (risk reduction),
ΔCLIP on the region's crop and the boundary distance on the ring (DSSIM: no LPIPS weights here).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...editing.learned_editor import LearnedEditor
from ...editing.learned_file import load_editor
from ...train.editor_losses import region_metrics
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.evaluate import held_out
from ...worlds.shapes.model import PixelDecoder, to_model_space
from ..bootstrap import interval, paired
from .referee_table import _all_correct

N_PAIRS, N_VAL, EPOCHS = 3000, 400, 12
MAX_EDIT_AREA = 0.4  # a pair whose images differ on more of the image is the fresh-layout fallback
HELD_OUT_GUARD = 512  # pairs whose prompt is among the first 512 held-out prompts are dropped


class MeasuringAuditor:
    """Wraps the tournament's auditor: every tournament's candidates are measured against the control view."""

    def __init__(self, inner):
        self.inner = inner
        self.classes = getattr(inner, "classes", None)
        self.values: dict[str, list[float]] = {}
        self.base = inner.inner if hasattr(inner, "inner") else inner  # the Auditor under a labeller

    def score(self, images, prompt, mask=None):
        if len(images) > 1 and mask is not None:
            hard = (mask[1:] if mask.shape[0] == len(images) else mask.expand(len(images) - 1, -1, -1, -1)) > 0
            if bool(hard.flatten(1).any(1).all()):
                text = self.base.text_features([prompt]).expand(len(images) - 1, -1)
                ctrl = images[:1].expand(len(images) - 1, -1, -1, -1)
                m = region_metrics(self.base, images[1:], ctrl, ctrl, hard.float(), text)
                for k in ("delta_r", "delta_clip", "ring"):
                    self.values.setdefault(k, []).extend(m[k].tolist())
        return self.inner.score(images, prompt, mask)


def editor_pairs(folder: Path, size: int) -> tuple[Path, Path]:
    """Training and validation pairs of the "local" kind, none with a held-out prompt."""
    from ...auditor.data import write_pairs_parquet
    from ...worlds.shapes.auditor import PAIR_KINDS, VAL_SEED

    banned = {p for p, _ in held_out(HELD_OUT_GUARD)}
    make = PAIR_KINDS["local"]
    out = []
    for name, seeds, n in (
        ("train", range(0, 10 * N_PAIRS), N_PAIRS),
        ("val", range(VAL_SEED, VAL_SEED + 10 * N_VAL), N_VAL),
    ):
        path = folder / f"pairs-{name}-local.parquet"
        if not path.is_file():
            rows = []
            for seed in seeds:
                prompt, good, bad = make(seed, size)
                differ = float(((good - bad).abs().amax(0) > 0).float().mean())
                if prompt in banned or not 0 < differ <= MAX_EDIT_AREA:  # held out, or no local edit
                    continue
                # the edit's own pixels, one pixel wider: the pair's Mask (the trainer's region)
                edit = ((good - bad).abs().amax(0, keepdim=True) > 0).float()
                mask = torch.nn.functional.max_pool2d(edit[None], 3, stride=1, padding=1)[0]
                rows.append({"Prompt": prompt, "Chosen": good, "Rejected": bad, "Category": "local", "Mask": mask})
                if len(rows) == n:
                    break
            write_pairs_parquet(path, rows)
        out.append(path)
    return out[0], out[1]


def editor_key(auditor_folder: Path) -> str:
    heads = (Path(auditor_folder) / "heads.safetensors").read_bytes()
    recipe = json.dumps({"pairs": N_PAIRS, "val": N_VAL, "epochs": EPOCHS, "kind": "local", "mask": "edit+1", "v": 2})
    return hashlib.sha256(heads + recipe.encode()).hexdigest()[:12]


def ensure_editor(auditor_folder: Path, size: int, log=print) -> Path:
    """The learned editor for this auditor, trained into ``<cache>/shapes/editor-<key>/`` when missing."""
    from ...train.editor import EditorSettings, train_editor
    from ...worlds.shapes.clip import ARCH, CONFIG_DIR

    folder = Path(auditor_folder).parent / f"editor-{editor_key(auditor_folder)}"
    out = folder / "editor.safetensors"
    if out.is_file() and out.with_suffix(".json").is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    tr, va = editor_pairs(folder, size)
    train_editor(
        EditorSettings(
            data=str(tr),
            val_data=str(va),
            backbone=str(Path(auditor_folder) / "clip.safetensors"),
            arch=ARCH,
            config_dir=str(CONFIG_DIR),
            heads=str(Path(auditor_folder) / "heads.safetensors"),
            out=str(out),
            family="shapes",
            image_size=size,  # the world's own size: the loop's views are what the editor sees
            epochs=EPOCHS,
            device="cpu",
        ),
        say=log,
    )
    return out


def shapes_learned_editor(path: Path, auditor, n_audit_call: bool = True) -> LearnedEditor:
    """The file's editor on the pixel-space world: its RGB view is the decoder's, and back is 2·y − 1."""
    net, identity = load_editor(path)
    identity.check_family("shapes")
    identity.check_text_encoder(auditor.backbone.identity())
    return LearnedEditor(
        net,
        identity,
        lambda p: auditor.text_features([p])[0],
        to_space=PixelDecoder(),
        from_space=to_model_space,
        audit_call=n_audit_call,
    )


def _line(row: dict, winnable: float, res, mean: dict) -> str:
    a, d = row["accuracy"], row["d_accuracy"]
    return (
        f"{row['editor']:<22} {row['n_candidates']:>3} {f'{a[0]:.3f} [{a[1]:.2f},{a[2]:.2f}]':>20} "
        f"{f'{d[0]:+.3f} [{d[1]:+.2f},{d[2]:+.2f}]':>22} {winnable:>9.3f} {res.accepted:>4}/{res.tournaments:<4} "
        f"{row['denoiser_evals_per_image']:>11.1f} {row['editor_forwards_per_image']:>9.1f} "
        f"{mean.get('delta_r', float('nan')):>+8.4f} {mean.get('delta_clip', float('nan')):>+8.4f} "
        f"{mean.get('ring', float('nan')):>7.4f} {row['seconds_per_image']:>6.2f}"
    )


def editor_table(model, s, auditor, miner, editor_file: Path, n: int, log=print) -> tuple[str, list[dict]]:
    from .runs import LabellingAuditor, run_best_of_n, run_plain, run_tipai
    from .settings import make_suite

    checker = Checker()
    items = held_out(n)
    prompts = [p for p, _ in items]
    plain = run_plain(model, items, s)
    acc0 = _all_correct(plain.images, prompts, checker)
    learned = shapes_learned_editor(editor_file, auditor)
    # the diffusion editor's evaluations per tournament: N·(d + 1), d drawn from the knobs; the learned
    # editor spends N (its audit call), so it gets N·E[d + 1] candidates at equal denoiser compute
    depths, probs = s.knobs["depth"]
    equal_n = int(round(s.n_candidates * sum((d + 1) * p for d, p in zip(depths, probs))))
    arms = [
        ("diffusion", None, s.n_candidates),
        ("learned", learned, s.n_candidates),
        ("learned, equal evals", learned, equal_n),
    ]
    lines = [
        f"the loop on {n} held-out prompts, learned auditor and miner: plain accuracy {acc0.mean():.3f}",
        f"{'editor':<22} {'N':>3} {'accuracy':>20} {'Δ vs plain':>22} {'winnable':>9} {'accepted':>9} "
        f"{'D evals/img':>11} {'E fwd/img':>9} {'Δr':>8} {'ΔCLIP':>8} {'ring':>7} {'s/img':>6}",
    ]
    rows = []
    for name, editor, n_cand in arms:
        meas = MeasuringAuditor(LabellingAuditor(auditor, checker))
        suite = make_suite(replace(s, n_candidates=n_cand), meas, miner)
        if editor is not None:
            suite = replace(suite, editor=editor)
        res = run_tipai(model, items, replace(s, n_candidates=n_cand), suite)
        acc = _all_correct(res.images, prompts, checker)
        labels = [lab for lab in meas.inner.labels if len(lab) > 1]
        winnable = float(np.mean([any(bool(v) for v in lab[1:]) for lab in labels])) if labels else 0.0
        mean = {k: float(np.mean(v)) if v else float("nan") for k, v in meas.values.items()}
        row = {
            "editor": name,
            "n_candidates": n_cand,
            "accuracy": interval(acc),
            "d_accuracy": paired(acc.tolist(), acc0.tolist()),
            "winnable": winnable,
            "tournaments": res.tournaments,
            "accepted": res.accepted,
            "denoiser_evals_per_image": float(np.mean(res.evals)),
            "editor_forwards_per_image": float(np.mean(res.editor_images)) if res.editor_images else 0.0,
            **mean,
            "seconds_per_image": res.seconds / n,
        }
        row["correct"] = acc.tolist()
        rows.append(row)
        lines.append(_line(row, winnable, res, mean))
        log(lines[-1])
    # the bar: best-of-N with the same learned judge at the diffusion editor's denoiser evaluations
    plain_evals = float(np.mean(plain.evals))
    n_bo = max(2, int(round(rows[0]["denoiser_evals_per_image"] / plain_evals)))
    bo = run_best_of_n(model, items, s, n_bo, auditor, first=plain)
    acc_bo = _all_correct(bo.images, prompts, checker)
    bo_row = {
        "editor": f"best-of-{n_bo} (no editor)",
        "n_candidates": n_bo,
        "accuracy": interval(acc_bo),
        "d_accuracy": paired(acc_bo.tolist(), acc0.tolist()),
        "denoiser_evals_per_image": float(np.mean(bo.evals)),
        "seconds_per_image": bo.seconds / n,
        "correct": acc_bo.tolist(),
    }
    rows.append(bo_row)
    a, d = bo_row["accuracy"], bo_row["d_accuracy"]
    lines.append(
        f"{bo_row['editor']:<22} {n_bo:>3} {f'{a[0]:.3f} [{a[1]:.2f},{a[2]:.2f}]':>20} "
        f"{f'{d[0]:+.3f} [{d[1]:+.2f},{d[2]:+.2f}]':>22} {'':>9} {'':>9} {bo_row['denoiser_evals_per_image']:>11.1f}"
    )
    log(lines[-1])
    lines.append("paired differences of accuracy over the prompts [95% bootstrap]:")
    best = rows[2]
    for other in (rows[0], bo_row):
        d = paired(best["correct"], other["correct"])
        lines.append(f"  {best['editor']} − {other['editor']}: {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]")
        log(lines[-1])
    return "\n".join(lines), rows


__all__ = ["MeasuringAuditor", "editor_table", "ensure_editor", "shapes_learned_editor"]
