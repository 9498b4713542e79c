"""Inpaint Biases in ShapesWorld: which text should condition a mined region's edit (``--region-text``).

The local loop (learned auditor and Grad-CAM miner, fixed knobs, δ = 0) on held-out prompts, four times,
differing only in the text its editor is conditioned on inside each region (ShapesWorld's region
conditioning: the model's third CFG branch, blended in by the mask):

* ``base prompt``: the whole prompt inside the region too (no region text);
* ``parsed phrase``: the phrase of the clause the checker finds failing there, read from the parsed
  prompt (``parsed_phrase``). It knows the truth, so it is an upper bound, not a method;
* ``auditor phrase``: the prompt words the auditor's Grad-CAM ties to the region (``region_prompts``);
* ``LLM phrase``: that phrase as the hint of a local language model, its decoding held to the world's
  vocabulary (``prompting.region_refiner.RegionRefiner``), written once per (prompt, phrase).

Every arm makes the same denoiser evaluations (the same knobs and seeds; an evaluation is a batch row);
a region text adds one CFG branch inside the editor's calls (three model rows per row instead of two),
which the wall time shows. Reported per arm: whole-prompt accuracy with its bootstrap interval and the
paired difference to the base prompt, the share of tournaments holding a checker-better candidate, the
accept rate, the share of images regressing against plain, and for the LLM how often its answer parses
in the world's grammar (the world's text encoder reads any string of its words; the grammar is stricter).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...mining.regions import Region
from ...worlds.shapes.checker import Checker, Detection
from ...worlds.shapes.evaluate import clause_accuracy
from ...worlds.shapes.grammar import NUMBER_WORDS, VOCAB, Clause, parse
from ..bootstrap import interval, paired
from .runs import LabellingAuditor, run_plain, run_tipai
from .settings import EvalSettings, learned_miner, make_suite

ARMS = ("base prompt", "parsed phrase", "auditor phrase", "LLM phrase")
WORLD_WORDS = tuple(VOCAB[2:])  # every word of the grammar, without <pad> and <bos>
LLM_MAX_NEW_TOKENS = 8  # a clause is at most 8 words ("a red circle left of a blue square")


def clause_phrase(c: Clause) -> str:
    """The clause as the grammar writes it: "a red circle", "two red circles", "a red circle above a blue square"."""
    if c.type == "count":
        return f"{NUMBER_WORDS[c.n]} {c.colour} {c.shape}s"
    if c.type == "relation":
        return f"a {c.colour} {c.shape} {c.relation} a {c.colour2} {c.shape2}"
    return f"a {c.colour} {c.shape}"


def _overlap(region: Region, d: Detection, h: int, w: int) -> float:
    y0, x0, y1, x1 = region.bbox
    dx0, dx1 = (d.cx - d.w / 2) * w, (d.cx + d.w / 2) * w
    dy0, dy1 = (d.cy - d.h / 2) * h, (d.cy + d.h / 2) * h
    return max(0.0, min(x1, dx1) - max(x0, dx0)) * max(0.0, min(y1, dy1) - max(y0, dy0))


def parsed_phrase(checker: Checker, view: torch.Tensor, prompt: str, region: Region) -> str | None:
    """The phrase of the failing clause that the region's objects belong to; None when every clause holds.

    Each object the checker found in the region (by box overlap) counts for a failing clause by how well it
    matches one of the clause's objects: 1 for its colour and shape, 1/2 for its colour only (a red square
    where a red circle was asked is most likely that circle), 1/4 for its shape only. The clause with the
    most wins; with none (what is missing has no box), the first failing clause. ``view``: [1,3,H,W] in [0, 1].
    """
    failing = [c for c, ok in checker(view[0], prompt) if not ok]
    if not failing:
        return None
    h, w = view.shape[-2:]
    inside = [(d, _overlap(region, d, h, w)) for d in checker.detect(view[0])]

    def match(d: Detection, colour: str | None, shape: str | None) -> float:
        if d.colour == colour:
            return 1.0 if d.shape == shape else 0.5
        return 0.25 if d.shape == shape else 0.0

    def weight(c: Clause) -> float:
        objects = [(c.colour, c.shape)] + ([(c.colour2, c.shape2)] if c.colour2 else [])
        return sum(a * max(match(d, *o) for o in objects) for d, a in inside)

    best = max(failing, key=weight)  # max keeps the first of equals: the first failing clause when none weighs
    return clause_phrase(best)


class ParsedPhraseMiner:
    """A miner whose regions carry ``parsed_phrase`` (the checker's failing clause) as their text."""

    def __init__(self, inner, checker: Checker):
        self.inner, self.checker = inner, checker

    def reset(self) -> None:
        if hasattr(self.inner, "reset"):
            self.inner.reset()

    def __call__(self, image: torch.Tensor, prompt: str, user_mask: torch.Tensor | None = None) -> list[Region]:
        regions = self.inner(image, prompt, user_mask)
        return [replace(r, prompt=parsed_phrase(self.checker, image, prompt, r) or r.prompt) for r in regions]


@dataclass
class ArmResult:
    arm: str
    correct: list[float]  # whole-prompt verdict per image
    has_winner: list[bool]  # per tournament
    accepted: int
    tournaments: int
    regressed: int
    evals_per_image: float
    seconds_per_image: float
    texts: int = 0  # regions that carried a text of their own
    regions: int = 0


def _arm(model, items, s: EvalSettings, auditor, miner, name: str, plain_sat: list[int], checker: Checker) -> ArmResult:
    suite = replace(make_suite(s, LabellingAuditor(auditor, checker), miner), region_encoder=lambda text: text)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "tournaments.jsonl"
        r = run_tipai(model, items, s, suite, log)
        from ...records.tournament_log import iter_records

        recs = list(iter_records([log]))
    prompts = [p for p, _ in items]
    _, verdicts = clause_accuracy(r.images, prompts, checker)
    regressed = sum(1 for i, v in enumerate(verdicts) if r.accepted_boxes[i] and sum(v) < plain_sat[i])
    return ArmResult(
        arm=name,
        correct=[float(all(v)) for v in verdicts],
        has_winner=[any(bool(x) for x in (rec.true_win or [])[1:]) for rec in recs],
        accepted=r.accepted,
        tournaments=r.tournaments,
        regressed=regressed,
        evals_per_image=sum(r.evals) / len(r.evals),
        seconds_per_image=r.seconds / len(items),
        texts=sum(1 for rec in recs if rec.region.get("prompt")),
        regions=len(recs),
    )


def region_text_table(model, s: EvalSettings, auditor, items, lm=None, log=print) -> tuple[str, dict]:
    """The four arms on ``items`` (the LLM arm only with ``lm``, a ``prompting.llm.LocalLM``); returns the
    text table and a JSON-ready dict."""
    from ...prompting.region_refiner import RegionRefiner

    checker = Checker()
    plain = run_plain(model, items, s)
    prompts = [p for p, _ in items]
    _, plain_v = clause_accuracy(plain.images, prompts, checker)
    plain_sat = [sum(v) for v in plain_v]
    plain_correct = [float(all(v)) for v in plain_v]
    miners: dict[str, object] = {
        "base prompt": learned_miner(auditor, region_prompts=False),
        "parsed phrase": ParsedPhraseMiner(learned_miner(auditor, region_prompts=False), checker),
        "auditor phrase": learned_miner(auditor, region_prompts=True),
    }
    refiner = None
    if lm is not None:
        refiner = RegionRefiner(lm.model, lm.tokenizer, allowed_words=WORLD_WORDS, max_new_tokens=LLM_MAX_NEW_TOKENS)
        miners["LLM phrase"] = learned_miner(auditor, region_prompts=True, prompter=refiner)
    arms = []
    for name, miner in miners.items():
        t0 = time.time()
        arms.append(_arm(model, items, s, auditor, miner, name, plain_sat, checker))
        log(f"[region text] {name}: {time.time() - t0:.0f} s")
    base = arms[0]
    rows = []
    for a in arms:
        acc = interval(a.correct)
        diff = paired(a.correct, base.correct) if a is not base else None
        win = interval([float(x) for x in a.has_winner]) if a.has_winner else None
        rows.append(
            {
                "arm": a.arm,
                "accuracy": acc,
                "minus_base": diff,
                "tournaments": a.tournaments,
                "with_winner": win,
                "accept_rate": a.accepted / a.tournaments if a.tournaments else None,
                "regress": a.regressed / len(items),
                "regions_with_text": a.texts / a.regions if a.regions else None,
                "evals_per_image": a.evals_per_image,
                "seconds_per_image": a.seconds_per_image,
            }
        )
    llm = None
    if refiner is not None:
        answers = [t for t in refiner.answers.values() if t is not None]
        parses = sum(1 for t in answers if _parses(t))
        llm = {
            "asked": refiner.calls,
            "written": refiner.written,
            "empty": refiner.empty,
            "parse_rate": parses / len(answers) if answers else None,
            "seconds_per_rewrite": refiner.seconds / refiner.written if refiner.written else None,
            "examples": [{"prompt": p, "hint": h, "answer": t} for (p, h), t in list(refiner.answers.items())[:12]],
        }
    out = {"n": len(items), "plain": interval(plain_correct), "arms": rows, "llm": llm}
    return text_table(out), out


def _parses(text: str) -> bool:
    try:
        return bool(parse(text))
    except ValueError:
        return False


def _ci(v) -> str:
    return "-" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def text_table(out: dict) -> str:
    head = (
        f"{'region text':<16} {'accuracy [95% CI]':>24} {'minus base [95% CI]':>27} {'with winner [95% CI]':>24} "
        f"{'accept':>7} {'regress':>7} {'text':>5} {'evals/img':>9} {'s/img':>6}"
    )
    lines = [f"held-out prompts: {out['n']}; plain {_ci(out['plain'])}", head, "-" * len(head)]
    for r in out["arms"]:
        acc = r["accept_rate"]
        txt = r["regions_with_text"]
        lines.append(
            f"{r['arm']:<16} {_ci(r['accuracy']):>24} {_ci(r['minus_base']):>27} {_ci(r['with_winner']):>24} "
            f"{'-' if acc is None else format(acc, '.3f'):>7} {r['regress']:>7.3f} "
            f"{'-' if txt is None else format(txt, '.2f'):>5} {r['evals_per_image']:>9.1f} "
            f"{r['seconds_per_image']:>6.2f}"
        )
    llm = out["llm"]
    if llm is not None:
        rate, sec = llm["parse_rate"], llm["seconds_per_rewrite"]
        lines.append(
            f"LLM: {llm['written']} rewrites for {llm['asked']} regions (the rest from the cache), {llm['empty']} "
            f"empty; parses in the grammar: {'-' if rate is None else format(rate, '.3f')}; "
            f"{'-' if sec is None else format(sec, '.2f')} s per rewrite"
        )
    return "\n".join(lines)
