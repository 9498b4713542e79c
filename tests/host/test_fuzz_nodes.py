"""Property-based fuzzing of every TiPAI node inside the real ComfyUI (in process, tiny sizes).

The strategies come from each node's own schema (``tests/host/fuzz_strategies.py``): ids, types,
min/max, combo options and defaults, so a new input is fuzzed without editing this file. Each stage
first runs a sweep (every edge value of every widget once, the others at their defaults; every
mask and image variant once), then hypothesis-generated cases: values mostly valid, in most cases
one or two inputs at an edge value (NaN, ±inf, 1e9, just outside min/max, "1,,2", "../../etc/x",
NaN / all-zero / wrong-size masks, 1x1 and 63x65 images).

How a value reaches the node. Every case first goes through ComfyUI's own per-node validation,
``execution.validate_inputs`` (what ``validate_prompt`` calls for each node of a graph), on a
one-node prompt holding the widget values: it converts them as ComfyUI does (``int("3")``,
``int(2.5)``, ``float("nan")``), applies min/max and runs the node's own ``validate_inputs``.
Socket inputs are not in that prompt, so its "required input missing" errors for sockets are
dropped. A value it rejects is outcome (b), "rejected by ComfyUI", and the node is not called (the
graph path would not call it either). A value it passes (NaN passes a min/max check: ``nan < min``
is False) is handed, converted, to ``cls.execute`` under ``torch.inference_mode()``, as ComfyUI's
executor does. Note: ComfyUI 0.3.75 never checks a V3 combo against its options (its list check
wants a list type, V3 sends "COMBO"), and skips min/max for the inputs a node's validate_inputs
takes; the node owns those checks, so the classifier holds it to its schema.

Every outcome is classified:

(a) normal return, every tensor, float and JSON number in the outputs finite (the pack's settings
    objects are walked too: a Guard holding δ = NaN is a NaN output);
(b) a ValueError / TypeError / RuntimeError / OSError whose message names the node (display name or
    id) or one of the inputs involved (its id, or the id with spaces for underscores), or a
    rejection by ComfyUI's validation;
(c) anything else, a failure: an unnamed error, another exception type, a non-finite output, a
    non-finite input (NaN that passed min/max, a NaN/inf mask or image) accepted without an error
    (AGENTS.md: NaN or Inf is bad input), a run with a combo value outside its options or a number
    outside min/max, a case over ``CASE_LIMIT_S`` (SIGALRM stops it, time.monotonic measures it),
    and for the samplers: a TiPAI KSampler result with nothing accepted that is not bit-identical
    to ComfyUI's KSampler, a refusal blaming a KSampler input (steps, denoise, cfg, seed, sampler,
    scheduler) for in-schema values that ComfyUI's KSampler samples, and a tournament log written
    outside output/tipai_logs.

Stages: the settings nodes (Miner, Inpaint without a model, Guard, TSPO) are cheap and get many
cases; the settings objects that came out (a) then feed fewer TiPAI KSampler, Patch Model,
standalone Miner/Inpaint and Auditor runs at 64x64, 1-4 steps, N <= 2, K = 1; last, the Region Prompt
runs the real SmolLM2-135M GGUF (``smollm2_llm``), loaded once and kept, at most 4 new tokens a case.
Hypothesis runs with a fixed seed per stage, no database, no shrinking (outcomes are collected, not raised), so a run
generates the same cases as long as the schemas do not change. ``-s`` prints the tables;
``TIPAI_FUZZ_DUMP=file`` writes every outcome as JSON lines; ``TIPAI_FUZZ_SCALE=0.2`` is a quick
look (fewer generated cases, no sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import json
import math
import os
import re
import resource
import signal
import sys
import time
import uuid
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from tests.host import fuzz_strategies as fs

CASE_LIMIT_S = 20.0
MEMORY_HEADROOM = 8 << 30  # address space the fuzz run may add: a runaway allocation fails fast
NAMED_TYPES = (ValueError, TypeError, RuntimeError, OSError)
MAX_LISTED = 20
# TIPAI_FUZZ_SCALE=0.2 for a quick look (fewer examples per stage); the default is the full run
SCALE = float(os.environ.get("TIPAI_FUZZ_SCALE", "1"))
MIN_CASES = 300

# examples per stage (cheap settings nodes many, sampling runs few)
EXAMPLES = {
    "TiPAIRegionMiner": 300,
    "TiPAIAuditorInpaint": 150,
    "TiPAITournamentGuard": 300,
    "TiPAITSPOSampler": 300,
    "TiPAIAuditorLoader": 30,
    "TiPAIAuditorScore": 60,
    "TiPAIRegionMiner/standalone": 50,
    "TiPAIAuditorInpaint/standalone": 12,
    "TiPAIKSampler": 70,
    "TiPAIPatchModel": 20,
    "TiPAISaveTournamentLog": 60,
    "TiPAIRefereeRefine": 40,
    "TiPAIRegionPrompt": 30,
}
# tiny runs: the most steps / candidates / regions a sampling case may use, whatever the schema allows
MAX_STEPS, MAX_N, MAX_K, MAX_REFINE = 4, 2, 1, 2
# valid values that keep cases meaningful: min_area <= max_area (two independent uniform draws would
# break it half the time), no ONNX detectors (their files are not in the host), few steps
MINER_VALID = {
    "k": st.integers(1, MAX_K),
    "detectors": st.just("none"),
    "min_area": st.sampled_from([0.02, 0.0, 0.05, 0.1]),
    "max_area": st.sampled_from([0.5, 1.0, 0.3, 0.2]),
    # a language model in the loop costs a load per run: its valid path is tested in test_region_prompt_node.py
    "region_llm": st.just("none"),
}
KSAMPLER_SHARED = ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")
NONFINITE_LABELS = {"nan", "half_nan", "inf", "nan64", "inf64"}

HYPOTHESIS = dict(
    database=None,
    deadline=None,
    derandomize=False,  # the seed is fixed per stage with @seed instead
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.generate),
    print_blob=False,
)


class CaseTimeout(BaseException):
    """Raised by SIGALRM in a case over CASE_LIMIT_S (a BaseException: no `except Exception` eats it)."""


@dataclass
class Outcome:
    node: str
    stage: str
    cat: str  # "a", "b", "c"
    kind: str
    case: str
    targets: tuple[str, ...]
    detail: str = ""
    seconds: float = 0.0


def _on_alarm(signum, frame):
    raise CaseTimeout(f"over {CASE_LIMIT_S:.0f} s")


@contextlib.contextmanager
def _time_limit(seconds: float):
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _is_pack_object(obj) -> bool:
    return "tipai" in (type(obj).__module__ or "").lower()


def _json_nonfinite(text: str) -> str | None:
    if text[:1] not in ("[", "{"):
        return None
    bad: list[str] = []
    try:
        json.loads(text, parse_constant=bad.append)
    except ValueError:
        return None
    return bad[0] if bad else None


def _children(obj) -> list[tuple[Any, Any]] | None:
    """The parts of a container or of one of the pack's own objects; None for anything else
    (ComfyUI's and torch's objects, ModelPatcher, VAE, ... are not walked)."""
    if isinstance(obj, dict):
        return list(obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(enumerate(obj))
    if not _is_pack_object(obj):
        return None
    if isinstance(obj, torch.nn.Module):
        d = {k: v for k, v in vars(obj).items() if k not in ("_parameters", "_buffers", "_modules")}
        d.update({k: m for k, m in obj._modules.items() if m is not None and _is_pack_object(m)})
    elif dataclasses.is_dataclass(obj):
        d = {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}
    else:
        d = dict(getattr(obj, "__dict__", {}))
        d.update({name: getattr(obj, name, None) for name in getattr(type(obj), "__slots__", ())})
    return list(d.items())


def nonfinite(obj, path: str = "out", seen: set | None = None, depth: int = 0) -> str | None:
    """The path of the first non-finite number in an output (tensors, floats, JSON text, the pack's
    own settings objects, walked), or None."""
    seen = set() if seen is None else seen
    if depth > 12 or id(obj) in seen or obj is None or isinstance(obj, (bool, int)):
        return None
    if isinstance(obj, torch.Tensor):
        floating = obj.is_floating_point() or obj.is_complex()
        bad = floating and obj.numel() > 0 and not bool(torch.isfinite(obj).all())
        return f"{path} (tensor {tuple(obj.shape)})" if bad else None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else f"{path} = {obj}"
    if isinstance(obj, str):
        token = _json_nonfinite(obj)
        return f"{path} (JSON holds {token})" if token else None
    seen.add(id(obj))
    for k, v in _children(obj) or ():
        found = nonfinite(v, f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}", seen, depth + 1)
        if found:
            return found
    return None


def _word(msg: str, word: str) -> bool:
    if len(word) <= 2:  # "n", "k": exact case, or upper case ("N (candidates ...)")
        return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(w)}(?![A-Za-z0-9_])", msg) for w in (word, word.upper()))
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", msg, re.IGNORECASE) is not None


def _normalise(text: str) -> str:
    """A message with its values blanked, so one bug seen with many values is one group."""
    text = re.sub(r"(/[\w.@+-]+){2,}/?", "<path>", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"0x[0-9a-f]+", "#", text)
    text = re.sub(r"[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?|\b(nan|inf)\b", "#", text)
    return text[:170]


class Fuzz:
    """Generates, runs and classifies the cases; keeps the outcomes and the pools of settings."""

    def __init__(self, comfy, sd, auditor):
        import execution

        self.comfy, self.sd, self.auditor, self.execution = comfy, sd, auditor, execution
        self.outcomes: list[Outcome] = []
        self.stage_seconds: dict[str, float] = {}
        self.schema: dict[str, list[fs.Widget]] = {}
        self.display: dict[str, str] = {}
        self.pools: dict[str, list[tuple[str, Any, bool]]] = defaultdict(list)  # type -> (label, obj, edge?)
        self.reports: list[tuple[str, dict]] = []
        self.seen: set[tuple[str, str]] = set()
        self.duplicates: Counter = Counter()

    def node(self, node_id: str):
        cls = self.comfy.node_class(node_id)
        if node_id not in self.schema:
            self.schema[node_id] = fs.widgets(cls)
            self.display[node_id] = cls.define_schema().display_name or node_id
        return cls

    def widgets_of(self, node_id: str, *, exclude=()) -> list[fs.Widget]:
        self.node(node_id)
        return [w for w in self.schema[node_id] if w.is_widget and w.id not in exclude]

    def capped_edges(self, node_id: str, wid: str, cap: int) -> list:
        """The edge values of an INT input, without those ComfyUI would pass that exceed ``cap``
        (steps=10000 is a valid value, but not a tiny run)."""
        w = next(w for w in self.schema[node_id] if w.id == wid)
        out = []
        for v in fs.edge_values(w):
            try:
                iv = int(v)
            except (TypeError, ValueError, OverflowError):
                out.append(v)
                continue
            if iv > cap and (w.min is None or iv >= w.min) and (w.max is None or iv <= w.max):
                continue
            out.append(v)
        return out

    # ------------------------------------------------------------ ComfyUI's validation

    def comfy_validate(self, node_id: str, values: dict) -> tuple[list[dict], dict]:
        """ComfyUI's errors for these widget values, and the values as ComfyUI converted them. An
        exception in the node's own validate_inputs is returned as validate_prompt reports it."""
        prompt = {"fz": {"class_type": node_id, "inputs": dict(values)}}
        try:
            _, errors, _ = asyncio.run(self.execution.validate_inputs(uuid.uuid4().hex, prompt, "fz", {}))
        except Exception as exc:  # noqa: BLE001 - validate_prompt turns it into "exception_during_validation"
            return [{"type": "exception_during_validation", "exception": exc}], prompt["fz"]["inputs"]
        sockets = {w.id for w in self.schema[node_id] if not w.is_widget}
        errors = [
            e
            for e in errors
            if not (e["type"] == "required_input_missing" and e.get("extra_info", {}).get("input_name") in sockets)
        ]
        return errors, prompt["fz"]["inputs"]

    # ------------------------------------------------------------ one case

    def names_input(self, msg: str, involved: list[str]) -> bool:
        for node_id in involved:
            if self.display[node_id].lower() in msg.lower() or node_id in msg:
                return True
            for w in self.schema[node_id]:
                for word in {w.id, w.id.replace("_", " "), w.display_name or w.id}:
                    if _word(msg, word):
                        return True
        return False

    def outside_schema(self, node_id: str, converted: dict) -> tuple[str, str] | None:
        """A widget value the node ran with although its schema excludes it. ComfyUI 0.3.75 does not
        check a V3 combo against its options (its list check needs a list type; V3 sends "COMBO"),
        and skips min/max for every input the node's validate_inputs takes: the node owns both."""
        for w in self.schema[node_id]:
            if w.id not in converted:
                continue
            v = converted[w.id]
            if w.kind == fs.COMBO and w.options and v not in w.options:
                return "ran with a combo value outside its options", f"{w.id}={v!r}"
            number = w.kind in (fs.INT, fs.FLOAT) and isinstance(v, (int, float)) and math.isfinite(v)
            if number and ((w.min is not None and v < w.min) or (w.max is not None and v > w.max)):
                return "ran with a value outside min/max", f"{w.id}={v!r} not in [{w.min}, {w.max}]"
        return None

    def _validation_outcome(self, node_id: str, errors: list[dict]) -> tuple[str, str, str]:
        e = errors[0]
        if e["type"] == "exception_during_validation":
            exc = e["exception"]
            msg = f"{type(exc).__name__}: {exc}"
            if self.names_input(str(exc), [node_id]):
                return "b", "validate_inputs raised a named error", msg[:200]
            return "c", "validate_inputs raised, naming neither node nor input", msg[:300]
        return "b", "rejected by ComfyUI", f"{e['type']}: {e.get('details', '')}"[:200]

    def _error_outcome(self, exc: BaseException, involved: list[str], converted: dict, on_error):
        msg = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, NAMED_TYPES):
            return "c", f"exception type {type(exc).__name__}", msg[:300]
        if not self.names_input(str(exc), involved):
            return "c", "error names neither node nor input", msg[:300]
        extra = on_error(converted, exc) if on_error else None
        if extra:
            return "c", extra[0], f"{extra[1]}; TiPAI said {msg[:200]}"
        return "b", "named error", msg[:200]

    def _result_outcome(self, node_id: str, converted: dict, case: fs.Case, result, post):
        bad = nonfinite((result.args, result.ui) if hasattr(result, "args") else result)
        if bad:
            return "c", "non-finite output", bad
        nan_in = [k for k, v in converted.items() if isinstance(v, float) and not math.isfinite(v)]
        nan_in += [k for k, v in case.labels.items() if v in NONFINITE_LABELS]
        if nan_in:
            return "c", "non-finite input accepted", f"no error for non-finite {', '.join(nan_in)}"
        outside = self.outside_schema(node_id, converted)
        if outside:
            return "c", *outside
        problem = post(converted, result) if post else None
        if problem:
            return "c", *problem
        return "a", "ok", ""

    def run_case(self, stage: str, case: fs.Case, call, involved: list[str] | None = None, post=None, on_error=None):
        """Validate like ComfyUI, call, classify; return the result when it is (a), else None."""
        node_id = case.node_id
        key = (stage, case.describe(limit=10**9))
        if key in self.seen:  # hypothesis repeats some cases: run each distinct one once
            self.duplicates[stage] += 1
            return None
        self.seen.add(key)
        involved = involved or [node_id]
        for other in involved:
            self.node(other)

        def record(cat, kind, detail="", seconds=0.0):
            self.outcomes.append(Outcome(node_id, stage, cat, kind, case.describe(), case.targets, detail, seconds))

        errors, converted = self.comfy_validate(node_id, case.widgets)
        if errors:
            record(*self._validation_outcome(node_id, errors))
            return None
        t0 = time.monotonic()
        result, exc = None, None
        try:
            with _time_limit(CASE_LIMIT_S), torch.inference_mode():
                result = call(converted, case.sockets)
        except CaseTimeout as e:
            exc = e
        except Exception as e:  # noqa: BLE001 - every exception is classified
            exc = e
        finally:
            import comfy.model_management

            comfy.model_management.interrupt_current_processing(False)
        seconds = time.monotonic() - t0
        if isinstance(exc, CaseTimeout) or seconds > CASE_LIMIT_S:
            record("c", "over the time limit", f"{seconds:.1f} s", seconds)
        elif exc is not None:
            record(*self._error_outcome(exc, involved, converted, on_error), seconds)
        else:
            cat, kind, detail = self._result_outcome(node_id, converted, case, result, post)
            record(cat, kind, detail, seconds)
            return result if cat == "a" else None
        return None

    def stage(self, name: str, strategy, handler, explicit: list[fs.Case] = ()) -> None:
        """The explicit cases (the sweep) first, then ``EXAMPLES[name]`` generated ones."""
        t0 = time.monotonic()

        def run(case):
            handler(case)

        run = given(strategy)(run)
        for case in reversed(list(explicit) if SCALE >= 1 else []):
            run = example(case)(run)
        run = settings(max_examples=max(1, round(EXAMPLES[name] * SCALE)), **HYPOTHESIS)(run)
        run = seed(zlib.crc32(name.encode()))(run)
        run()
        self.stage_seconds[name] = time.monotonic() - t0

    # ------------------------------------------------------------ pools of settings

    def pool_add(self, kind: str, case: fs.Case, obj) -> None:
        short = case.node_id.replace("TiPAI", "")
        edge = ", ".join(f"{t}={fs._short(case.widgets.get(t, case.labels.get(t)))}" for t in case.targets)
        label = f"{short}#{len(self.pools[kind])}({edge or 'valid'})"
        self.pools[kind].append((label, obj, bool(case.targets)))

    def pool(self, kind: str, keep=lambda obj: True, size: int = 30) -> list[tuple[str, Any, bool]]:
        """None (unconnected) first, then the edge-derived objects that came out fine, then valid ones."""
        found = [e for e in self.pools[kind] if keep(e[1])]
        edge = [e for e in found if e[2]]
        valid = [e for e in found if not e[2]]
        return [("unconnected", None, False)] + (edge[: size * 2 // 3] + valid)[:size]


# ================================================================== fixtures


@pytest.fixture(scope="module")
def sd(comfy_inproc, tiny_checkpoint):
    n = comfy_inproc.nodes
    model, clip, vae = n.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoint)[:3]
    pos = n.CLIPTextEncode().encode(clip, "a red circle left of a blue square")[0]
    neg = n.CLIPTextEncode().encode(clip, "blurry")[0]
    latent = n.EmptyLatentImage().generate(64, 64, 1)[0]
    return {"model": model, "vae": vae, "pos": pos, "neg": neg, "latent": latent}


@pytest.fixture(scope="module")
def memory_cap():
    """A soft address-space cap, so a value that asks for a gigantic tensor fails fast (a RuntimeError,
    classified like any other) instead of pushing the shared machine out of memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                vm = int(line.split()[1]) * 1024
    cap = vm + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ================================================================== stages


def settings_stage(fz: Fuzz, node_id: str, kind: str, overrides: dict, sockets, base=None, sweep_sockets=()) -> None:
    """A settings node called as a settings node (no image, no model): cheap, many examples."""
    ws = fz.widgets_of(node_id)
    explicit = [fs.Case(node_id, v, targets=t) for v, t in fs.sweep(ws, base)]
    start = explicit[0].widgets
    explicit += [fs.Case(node_id, start, s_, l_, t_) for s_, l_, t_ in sweep_sockets]

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, overrides))
        socks, labels, t2 = sockets(draw)
        return fs.Case(node_id, values, socks, labels, targets + t2)

    cls = fz.node(node_id)

    def handle(case):
        out = fz.run_case(node_id, case, lambda v, s: cls.execute(**v, **s))
        if out is not None:
            fz.pool_add(kind, case, out.args[0])

    fz.stage(node_id, cases(), handle, explicit)


def mask_sweep(sock_id: str, hw=(64, 64), image: str | None = None, extra=None) -> list[tuple[dict, dict, tuple]]:
    """(sockets, labels, targets) for every mask variant at an image's size (plus ``extra`` sockets)."""
    out = []
    for label in fs.MASKS[1:]:
        socks, labels = dict(extra or {}), {}
        if image:
            socks["image"], labels["image"] = fs.make_image(image), image
        socks[sock_id], labels[sock_id] = fs.make_mask(label, *hw), label
        out.append((socks, labels, () if label in fs.VALID_MASKS else (sock_id,)))
    return out


def image_sweep(mask_id: str | None, extra=None) -> list[tuple[dict, dict, tuple]]:
    """(sockets, labels, targets) for every image variant, with a valid mask at its size if ``mask_id``."""
    out = []
    for label in fs.IMAGES:
        socks, labels = dict(extra or {}), {"image": label}
        socks["image"] = fs.make_image(label)
        if mask_id:
            socks[mask_id], labels[mask_id] = fs.make_mask("blob", *fs.image_hw(label)), "blob"
        out.append((socks, labels, () if label in fs.VALID_IMAGES else ("image",)))
    return out


def no_sockets(draw):
    return {}, {}, ()


def mask_socket(sock_id: str, hw=(64, 64)):
    def draw_it(draw):
        # mostly unconnected or a valid mask; else any variant
        r = draw(st.integers(0, 9))
        label = "none" if r < 4 else draw(st.sampled_from(fs.VALID_MASKS if r < 6 else fs.MASKS))
        if label == "none":
            return {}, {}, ()
        edge = () if label in fs.VALID_MASKS else (sock_id,)
        return {sock_id: fs.make_mask(label, *hw)}, {sock_id: label}, edge

    return draw_it


def guard_sockets(fz: Fuzz):
    def draw_it(draw):
        if draw(st.booleans()):
            return {"auditor": fz.auditor}, {"auditor": "tiny"}, ()
        return {}, {}, ()

    return draw_it


def stage_auditor_loader(fz: Fuzz) -> None:
    node_id = "TiPAIAuditorLoader"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    overrides = {"arch": st.just("tipai-tiny-vit")}
    edges = {"arch": list(fs.TEXT_EDGES) + ["ViT-B-32", "no-such-arch"]}

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, overrides, edges))
        return fs.Case(node_id, values, targets=targets)

    def handle(case):
        out = fz.run_case(node_id, case, lambda v, s: cls.execute(**v))
        if out is not None:
            fz.pool_add("auditor", case, out.args[0])

    explicit = [fs.Case(node_id, v, targets=t) for v, t in fs.sweep(ws, {"arch": "tipai-tiny-vit"}, edges)]
    fz.stage(node_id, cases(), handle, explicit)


def image_and_mask(draw, mask_id: str, mask_optional: bool):
    """An image label (mostly valid) and a mask at its size (mostly valid, sometimes any variant)."""
    r = draw(st.integers(0, 9))
    img = draw(st.sampled_from(fs.VALID_IMAGES if r < 6 else fs.IMAGES))
    r = draw(st.integers(0, 9))
    if mask_optional and r < 3:
        mlabel = "none"
    else:
        mlabel = draw(st.sampled_from(fs.VALID_MASKS if r < 7 else fs.MASKS[1:]))
    socks = {"image": fs.make_image(img)}
    labels = {"image": img}
    if mlabel != "none":
        socks[mask_id] = fs.make_mask(mlabel, *fs.image_hw(img))
        labels[mask_id] = mlabel
    targets = tuple(
        t
        for t, bad in (("image", img not in fs.VALID_IMAGES), (mask_id, mlabel not in (("none",) + fs.VALID_MASKS)))
        if bad
    )
    return socks, labels, targets


def auditor_pick(fz: Fuzz, draw):
    pool = [("tiny", fz.auditor, False)] + fz.pool("auditor")[1:]
    label, obj, edge = draw(st.sampled_from(pool))
    return label, obj, edge


def stage_auditor_score(fz: Fuzz) -> None:
    node_id = "TiPAIAuditorScore"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, edge_share=3))
        socks, labels, t2 = image_and_mask(draw, "mask", mask_optional=True)
        label, aud, edge = auditor_pick(fz, draw)
        socks["auditor"], labels["auditor"] = aud, label
        return fs.Case(node_id, values, socks, labels, targets + t2 + (("auditor",) if edge else ()))

    start = fs.sweep(ws)[0][0]
    aud = {"auditor": fz.auditor}
    explicit = [
        fs.Case(node_id, v, {**aud, "image": fs.make_image("rand64")}, {"image": "rand64"}, t) for v, t in fs.sweep(ws)
    ]
    explicit += [
        fs.Case(node_id, start, s_, l_, t_) for s_, l_, t_ in image_sweep("mask", aud) + image_sweep(None, aud)
    ]
    explicit += [fs.Case(node_id, start, s_, l_, t_) for s_, l_, t_ in mask_sweep("mask", image="rand64", extra=aud)]
    fz.stage(node_id, cases(), lambda case: fz.run_case(node_id, case, lambda v, s: cls.execute(**v, **s)), explicit)


def stage_miner_standalone(fz: Fuzz) -> None:
    node_id = "TiPAIRegionMiner"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    overrides = {
        **MINER_VALID,
        "detectors": st.sampled_from(["none", "none", "all"]),
        "prompt": st.sampled_from(fs.VALID_PROMPTS),
    }
    edges = {"k": fz.capped_edges(node_id, "k", MAX_K)}

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, overrides, edges, keep=("prompt",), edge_share=3))
        socks, labels, t2 = image_and_mask(draw, "user_mask", mask_optional=True)
        label, aud, edge = auditor_pick(fz, draw)
        socks["auditor"], labels["auditor"] = aud, label
        return fs.Case(node_id, values, socks, labels, targets + t2 + (("auditor",) if edge else ()))

    base = {"k": 1, "prompt": fs.VALID_PROMPTS[0]}
    aud = {"auditor": fz.auditor}
    img = {**aud, "image": fs.make_image("rand64")}
    sw = fs.sweep(ws, base, edges)
    explicit = [fs.Case(node_id, v, img, {"image": "rand64"}, t) for v, t in sw]
    explicit += [fs.Case(node_id, sw[0][0], s_, l_, t_) for s_, l_, t_ in image_sweep("user_mask", aud)]
    explicit += [
        fs.Case(node_id, sw[0][0], s_, l_, t_) for s_, l_, t_ in mask_sweep("user_mask", image="rand64", extra=aud)
    ]
    fz.stage(
        node_id + "/standalone",
        cases(),
        lambda case: fz.run_case(node_id + "/standalone", case, lambda v, s: cls.execute(**v, **s)),
        explicit,
    )


def stage_inpaint_standalone(fz: Fuzz) -> None:
    node_id = "TiPAIAuditorInpaint"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    overrides = {
        "steps": st.integers(2, MAX_STEPS),
        "refine_iters": st.integers(0, MAX_REFINE),
        "prompt": st.sampled_from(fs.VALID_PROMPTS),
    }
    edges = {
        "steps": fz.capped_edges(node_id, "steps", MAX_STEPS),
        "refine_iters": fz.capped_edges(node_id, "refine_iters", MAX_REFINE),
    }
    policies = fz.pool("policy", keep=lambda p: p.n <= MAX_N)
    guards = fz.pool("guard")
    needed = ("model", "positive", "negative", "vae")

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, overrides, edges, keep=("prompt", "steps"), edge_share=3))
        socks, labels, t2 = image_and_mask(draw, "mask", mask_optional=False)
        socks.update(model=fz.sd["model"], positive=fz.sd["pos"], negative=fz.sd["neg"], vae=fz.sd["vae"])
        if draw(st.integers(0, 19)) == 0:  # one standalone socket left unconnected
            gone = draw(st.sampled_from(needed + ("image", "mask")))
            socks.pop(gone, None)
            labels[gone] = "unconnected"
            t2 += (gone,)
        for sock, pool in (("policy", policies), ("guard", guards)):
            label, obj, edge = draw(st.sampled_from(pool))
            if obj is not None:
                socks[sock], labels[sock] = obj, label
                t2 += (f"{sock}<{label}>",) if edge else ()
        if draw(st.booleans()):
            label, aud, edge = auditor_pick(fz, draw)
            socks["auditor"], labels["auditor"] = aud, label
        return fs.Case(node_id, values, socks, labels, targets + t2)

    involved = [node_id, "TiPAITSPOSampler", "TiPAITournamentGuard"]
    small = next(obj for _, obj, edge in policies if obj is not None and not edge and obj.n == 1)
    sockets = dict(model=fz.sd["model"], positive=fz.sd["pos"], negative=fz.sd["neg"], vae=fz.sd["vae"], policy=small)
    # the editor widgets (backend, refine_iters, ...) are swept by the settings stage; here the standalone ones
    own = [w for w in ws if w.id in ("steps", "scheduler", "cfg", "prompt")]
    sw = fs.sweep(own, {"steps": 3, "prompt": fs.VALID_PROMPTS[0]}, edges)
    held = {w.id: fs.base_value(w, {"refine_iters": 0}) for w in ws if w not in own}
    sw = [({**held, **v}, t) for v, t in sw]
    full = {**sockets, "image": fs.make_image("rand64"), "mask": fs.make_mask("blob")}
    explicit = [fs.Case(node_id, v, full, {"image": "rand64", "mask": "blob"}, t) for v, t in sw]
    explicit += [fs.Case(node_id, sw[0][0], s_, l_, t_) for s_, l_, t_ in image_sweep("mask", sockets)]
    explicit += [
        fs.Case(node_id, sw[0][0], s_, l_, t_) for s_, l_, t_ in mask_sweep("mask", image="rand64", extra=sockets)
    ]
    fz.stage(
        node_id + "/standalone",
        cases(),
        lambda case: fz.run_case(node_id + "/standalone", case, lambda v, s: cls.execute(**v, **s), involved),
        explicit,
    )


def settings_picks(fz: Fuzz):
    """Strategies of (label, object, edge?) for the four settings sockets, from the pools."""
    return {
        "miner": fz.pool("miner", keep=lambda m: m.k <= MAX_K),
        "editor": fz.pool("editor", keep=lambda e: e.refine_iters <= MAX_REFINE),
        "guard": fz.pool("guard"),
        "policy": fz.pool("policy", keep=lambda p: p.n <= MAX_N),
    }


SETTINGS_NODE_OF = {
    "miner": "TiPAIRegionMiner",
    "editor": "TiPAIAuditorInpaint",
    "guard": "TiPAITournamentGuard",
    "policy": "TiPAITSPOSampler",
    "auditor": "TiPAIAuditorLoader",
}


def draw_settings(fz: Fuzz, draw, picks: dict, socks: dict, labels: dict) -> tuple[str, ...]:
    targets: tuple[str, ...] = ()
    for sock, pool in picks.items():
        label, obj, edge = draw(st.sampled_from(pool))
        labels[sock] = label
        if obj is not None:
            socks[sock] = obj
        if edge:
            targets += (f"{sock}<{label}>",)
    label, aud, edge = auditor_pick(fz, draw)
    socks["auditor"], labels["auditor"] = aud, label
    if edge:
        targets += (f"auditor<{label}>",)
    return targets


def stage_ksampler(fz: Fuzz) -> None:
    import nodes as comfy_nodes

    node_id = "TiPAIKSampler"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    # steps=1 and denoise=0 are valid values the lead asked about: they come up among the valid ones too
    overrides = {
        "steps": st.sampled_from([4, 3, 4, 2, 1]),
        "cfg": st.sampled_from([5.0, 7.0, 1.0, 0.0, 12.5]),
        "denoise": st.sampled_from([1.0, 0.75, 0.5, 1.0, 0.0]),
    }
    edges = {"steps": fz.capped_edges(node_id, "steps", MAX_STEPS)}
    picks = settings_picks(fz)
    sd = fz.sd

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, overrides, edges))
        socks = dict(
            model=sd["model"], positive=sd["pos"], negative=sd["neg"], latent_image=sd["latent"], vae=sd["vae"]
        )
        labels: dict[str, str] = {}
        targets += draw_settings(fz, draw, picks, socks, labels)
        return fs.Case(node_id, values, socks, labels, targets)

    def plain(v):
        return comfy_nodes.common_ksampler(
            sd["model"],
            v["seed"],
            v["steps"],
            v["cfg"],
            v["sampler_name"],
            v["scheduler"],
            sd["pos"],
            sd["neg"],
            sd["latent"],
            denoise=v.get("denoise", 1.0),
        )[0]["samples"]

    def post(v, out):
        latent, report = out.args[0], out.args[1]
        fz.reports.append((f"report(seed={v['seed']}, steps={v['steps']})", report))
        if report["summary"].get("accepted", 0) == 0:
            with torch.inference_mode():
                ref = plain(v)
            if not torch.equal(latent["samples"], ref):
                d = float((latent["samples"].float() - ref.float()).abs().max())
                return "nothing accepted, not bit-identical to KSampler", f"max |diff| {d:.3g}"
        return None

    def handle(case):
        # every edge value (if any) is a KSampler widget, the settings are valid ones
        only_shared = all(t in KSAMPLER_SHARED for t in case.targets)

        def on_error(v, exc):
            """A refusal that blames a KSampler input (steps, denoise, ...) for values ComfyUI's own
            KSampler samples to a finite latent is a failure: TiPAI should behave like KSampler there."""
            finite = all(not isinstance(x, float) or math.isfinite(x) for x in v.values())
            blames = any(_word(str(exc), w) for w in (*KSAMPLER_SHARED, "sampler"))
            # a combo value outside its options: ComfyUI's KSampler node (V1) refuses it at validation;
            # only its common_ksampler function, called here, swaps in the first option silently
            in_schema = fz.outside_schema(node_id, v) is None
            if not (only_shared and finite and blames and in_schema):
                return None
            try:
                with torch.inference_mode():
                    ref = plain(v)
            except Exception:  # noqa: BLE001 - ComfyUI refuses it too: the refusal is fine
                return None
            if bool(torch.isfinite(ref).all()):
                return "refuses what ComfyUI's KSampler samples", f"KSampler returns a finite latent for {case.targets}"
            return None

        involved = [node_id] + [SETTINGS_NODE_OF[s] for s in ("miner", "editor", "guard", "policy", "auditor")]
        fz.run_case(node_id, case, lambda v, s: cls.execute(**v, **s), involved, post=post, on_error=on_error)

    socks = dict(model=sd["model"], positive=sd["pos"], negative=sd["neg"], latent_image=sd["latent"], vae=sd["vae"])
    socks["auditor"] = fz.auditor
    # 4 steps: the default guard (audit_first=2, skip_last=1) audits step 2, so the sweep runs tournaments
    base = {"steps": MAX_STEPS, "sampler_name": "euler", "scheduler": "normal", "cfg": 5.0, "seed": 5}
    explicit = [fs.Case(node_id, v, socks, {"auditor": "tiny"}, t) for v, t in fs.sweep(ws, base, edges)]
    fz.stage(node_id, cases(), handle, explicit)


def stage_patch_model(fz: Fuzz) -> None:
    import nodes as comfy_nodes

    node_id = "TiPAIPatchModel"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    picks = settings_picks(fz)
    sd = fz.sd
    samplers = ["euler", "dpmpp_2m", "ddim", "euler_ancestral", "heun", "uni_pc"]

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws))
        socks = dict(model=sd["model"], vae=sd["vae"])
        labels: dict[str, str] = {}
        targets += draw_settings(fz, draw, picks, socks, labels)
        # the sampler the patched model then runs under (ComfyUI's own KSampler)
        labels["then"] = f"KSampler({draw(st.sampled_from(samplers))}, {draw(st.integers(1, MAX_STEPS))} steps)"
        return fs.Case(node_id, values, socks, labels, targets)

    def call(v, s, then: str):
        patched = cls.execute(**v, **s).args[0]
        m = re.match(r"KSampler\((\w+), (\d+) steps\)", then)
        sampler, steps = m.group(1), int(m.group(2))
        out = comfy_nodes.common_ksampler(
            patched, 7, steps, 5.0, sampler, "normal", sd["pos"], sd["neg"], sd["latent"]
        )[0]
        return {"latent": out}

    involved = [node_id] + [SETTINGS_NODE_OF[s] for s in ("miner", "editor", "guard", "policy", "auditor")]
    labels = {"auditor": "tiny", "then": f"KSampler(euler, {MAX_STEPS} steps)"}
    socks = dict(model=sd["model"], vae=sd["vae"], auditor=fz.auditor)
    explicit = [fs.Case(node_id, v, socks, labels, t) for v, t in fs.sweep(ws)]
    fz.stage(
        node_id,
        cases(),
        lambda case: fz.run_case(node_id, case, lambda v, s: call(v, s, case.labels["then"]), involved),
        explicit,
    )


def stage_referee_refine(fz: Fuzz) -> None:
    node_id = "TiPAIRefereeRefine"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    overrides = {
        "steps": st.integers(1, 2),
        "augmentations": st.integers(0, 2),
        "prompt": st.sampled_from(fs.VALID_PROMPTS),
    }
    edges = {w: fz.capped_edges(node_id, w, 2) for w in ("steps", "augmentations")}

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, overrides, edges, keep=("prompt",), edge_share=3))
        socks, labels, t2 = image_and_mask(draw, "mask", mask_optional=True)
        socks["vae"], labels["vae"] = fz.sd["vae"], "tiny"
        label, aud, edge = auditor_pick(fz, draw)
        socks["auditor"], labels["auditor"] = aud, label
        return fs.Case(node_id, values, socks, labels, targets + t2 + (("auditor",) if edge else ()))

    base = {"steps": 1, "augmentations": 0, "prompt": fs.VALID_PROMPTS[0]}
    socks = {"vae": fz.sd["vae"], "auditor": fz.auditor, "latent": fz.sd["latent"]}
    explicit = [fs.Case(node_id, v, socks, {"latent": "tiny"}, t) for v, t in fs.sweep(ws, base, edges)]
    fz.stage(node_id, cases(), lambda case: fz.run_case(node_id, case, lambda v, s: cls.execute(**v, **s)), explicit)


def stage_region_prompt(fz: Fuzz, llm: str) -> None:
    """The real language model (SmolLM2-135M, GGUF), loaded before the cases and kept: a load takes tens of seconds,
    over the case limit, so keep_loaded is held on (ComfyUI turns every edge value but 0 into True; 0 is left out,
    and the host test covers keep_loaded off) and a model released anyway is loaded again outside the limit. At
    most 4 new tokens a case."""
    node_id = "TiPAIRegionPrompt"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    glue = sys.modules[cls.__module__]
    overrides = {"max_new_tokens": st.integers(1, 4), "keep_loaded": st.just(True), "llm": st.just(llm)}
    keep_edges = [v for v in fs.edge_values(next(w for w in ws if w.id == "keep_loaded")) if v != 0]
    edges = {"max_new_tokens": fz.capped_edges(node_id, "max_new_tokens", 4), "keep_loaded": keep_edges}
    base = {"llm": llm, "max_new_tokens": 2, "keep_loaded": True, "prompt": fs.VALID_PROMPTS[0]}

    def handle(case):
        if not glue._CACHE:  # load outside the time limit
            cls.execute(llm, fs.VALID_PROMPTS[0], max_new_tokens=1, keep_loaded=True)
        fz.run_case(node_id, case, lambda v, s: cls.execute(**v))

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws, overrides, edges, keep=("prompt",), edge_share=5))
        return fs.Case(node_id, values, targets=targets)

    explicit = [fs.Case(node_id, v, targets=t) for v, t in fs.sweep(ws, base, edges)]
    try:
        fz.stage(node_id, cases(), handle, explicit)
    finally:
        for path in list(glue._CACHE):
            glue.release(path)


def stage_save_log(fz: Fuzz) -> None:
    node_id = "TiPAISaveTournamentLog"
    ws = fz.widgets_of(node_id)
    cls = fz.node(node_id)
    folder = Path(fz.comfy.output_dir) / "tipai_logs"
    workdir = Path(fz.comfy.output_dir).parent
    reports = fz.reports[:10]
    assert reports, "no TiPAI KSampler run came out (a): nothing to save"

    @st.composite
    def cases(draw):
        values, targets = draw(fs.widget_case(ws))
        label, report = draw(st.sampled_from(reports))
        return fs.Case(node_id, values, {"report": report}, {"report": label}, targets)

    def files_outside() -> set[str]:
        return {str(p) for p in workdir.rglob("*") if p.is_file() and folder not in p.parents}

    def handle(case):
        before = files_outside()

        def post(v, out):
            root = folder.resolve()
            for f in (out.ui or {}).get("tipai_logs", []):
                p = (folder / f["filename"]).resolve()
                if root not in p.parents or not p.is_file():
                    return "log written outside output/tipai_logs", f"{f} -> {p}"
            prefix = str(v.get("filename_prefix", ""))
            for p in glob.glob(os.path.join(str(folder), glob.escape(prefix)) + "_*"):
                if root not in Path(p).resolve().parents:
                    return "log written outside output/tipai_logs", p
            new = files_outside() - before
            if new:
                return "log written outside output/tipai_logs", ", ".join(sorted(new))[:200]
            return None

        fz.run_case(node_id, case, lambda v, s: cls.execute(**v, **s), post=post)

    label, report = reports[0]
    explicit = [fs.Case(node_id, v, {"report": report}, {"report": label}, t) for v, t in fs.sweep(ws)]
    fz.stage(node_id, cases(), handle, explicit)


# ================================================================== report


def summary(fz: Fuzz, seconds: float) -> tuple[str, list[str]]:
    cats = Counter(o.cat for o in fz.outcomes)
    lines = [
        f"TiPAI fuzz: {len(fz.outcomes)} cases in {seconds:.0f} s  "
        f"(a) ok {cats['a']}  (b) refused with a named error {cats['b']}  (c) failures {cats['c']}",
        "",
        f"{'stage':34} {'cases':>5} {'(a)':>5} {'(b)':>5} {'(c)':>5} {'dups':>5} {'secs':>6}",
    ]
    by_stage: dict[str, Counter] = defaultdict(Counter)
    for o in fz.outcomes:
        by_stage[o.stage][o.cat] += 1
    for stage, c in by_stage.items():
        lines.append(
            f"{stage:34} {sum(c.values()):5} {c['a']:5} {c['b']:5} {c['c']:5} {fz.duplicates[stage]:5} "
            f"{fz.stage_seconds.get(stage, 0):6.1f}"
        )
    runs = [r["summary"] for _, r in fz.reports]
    audited = sum(1 for r in runs if r.get("audited_steps"))
    accepted = sum(1 for r in runs if r.get("accepted"))
    lines.append(
        f"TiPAI KSampler runs that came out (a): {len(runs)}, with audits {audited}, with an edit accepted {accepted}"
    )
    kinds = Counter((o.cat, o.kind) for o in fz.outcomes)
    lines += ["", "outcomes by kind:"] + [f"  ({c}) {k}: {n}" for (c, k), n in sorted(kinds.items())]
    groups: dict[tuple, list[Outcome]] = defaultdict(list)
    for o in fz.outcomes:
        if o.cat != "c":
            continue
        if o.kind.startswith("ran with"):  # one group per input: "scheduler='x'" -> scheduler
            key = (o.stage, o.kind, o.detail.split("=", 1)[0])
        else:
            key = (o.stage, o.kind, _normalise(o.detail))
        groups[key].append(o)
    listed = []
    for key, members in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        ex = members[0]
        seen = Counter(",".join(m.targets) or "(all valid)" for m in members).most_common(3)
        listed.append(
            f"[{key[0]}] {key[1]} x{len(members)}\n    {ex.detail[:300]}\n"
            f"    edge inputs seen: {'; '.join(f'{t} (x{n})' for t, n in seen)}\n    e.g. {ex.case}"
        )
    return "\n".join(lines), listed


@pytest.fixture(scope="module")
def quiet_progress(comfy_inproc):
    """No tqdm bar per sampling case (restored afterwards)."""
    import comfy.utils

    before = comfy.utils.PROGRESS_BAR_ENABLED
    comfy.utils.PROGRESS_BAR_ENABLED = False
    try:
        yield
    finally:
        comfy.utils.PROGRESS_BAR_ENABLED = before


def test_fuzz_every_tipai_node(comfy_inproc, sd, tiny_auditor, smollm2_llm, memory_cap, quiet_progress):
    t0 = time.monotonic()
    auditor = comfy_inproc.node_class("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0)
    fz = Fuzz(comfy_inproc, sd, auditor.args[0])

    # 1. settings nodes: cheap, many examples; what comes out fine feeds the sampling stages
    settings_stage(
        fz, "TiPAIRegionMiner", "miner", MINER_VALID, mask_socket("user_mask"), {"k": 1}, mask_sweep("user_mask")
    )
    settings_stage(fz, "TiPAIAuditorInpaint", "editor", {"refine_iters": st.integers(0, MAX_REFINE)}, no_sockets)
    settings_stage(
        fz,
        "TiPAITournamentGuard",
        "guard",
        {
            "audit_every": st.integers(1, 3),
            "audit_first": st.integers(1, 3),
            "skip_last": st.integers(0, 1),
            "delta": st.sampled_from([0.02, 0.0, 0.5, 10.0]),
        },
        guard_sockets(fz),
    )
    settings_stage(fz, "TiPAITSPOSampler", "policy", {"n": st.integers(1, MAX_N)}, no_sockets, {"n": MAX_N})
    # 2. the auditor nodes and the standalone uses
    stage_auditor_loader(fz)
    stage_auditor_score(fz)
    stage_miner_standalone(fz)
    stage_inpaint_standalone(fz)
    # 3. whole sampling runs with the settings that came out fine
    stage_ksampler(fz)
    stage_patch_model(fz)
    stage_save_log(fz)
    stage_referee_refine(fz)
    # 4. the language model's rewrite (no image, no diffusion model)
    stage_region_prompt(fz, smollm2_llm)

    text, failures = summary(fz, time.monotonic() - t0)
    if os.environ.get("TIPAI_FUZZ_DUMP"):  # every outcome as JSON lines, for a closer look
        with open(os.environ["TIPAI_FUZZ_DUMP"], "w") as f:
            for o in fz.outcomes:
                f.write(json.dumps(dataclasses.asdict(o)) + "\n")
    print("\n" + text)
    if failures:
        print(f"\n{len(failures)} distinct failures (stage, kind, edge inputs, message):")
        print("\n".join(failures))
    assert len(fz.outcomes) >= MIN_CASES * min(1.0, SCALE), f"only {len(fz.outcomes)} cases generated"
    for node_id in fz.schema:
        assert any(o.node == node_id for o in fz.outcomes), f"{node_id} was never fuzzed"
    if failures:
        head = "\n".join(failures[:MAX_LISTED])
        more = f"\n... and {len(failures) - MAX_LISTED} more distinct failures" if len(failures) > MAX_LISTED else ""
        pytest.fail(f"{text}\n\nfailures (first {MAX_LISTED} distinct):\n{head}{more}", pytrace=False)
