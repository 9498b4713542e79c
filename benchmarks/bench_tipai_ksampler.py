"""What TiPAI costs inside ComfyUI: the TiPAI KSampler against ComfyUI's own KSampler, in one run.

How to run it, from the repository root:

    python3 scripts/host.py                                   # build (or find) the test host; prints <host>
    <host>/venv/bin/python benchmarks/bench_tipai_ksampler.py [--size 64] [--steps 10] [--repeats 3]
                                                             [--ckpt NAME] [--sampler euler] [--device-note TEXT]

Started with any other Python, the script re-executes itself with the host's Python. It finds the host
with ``scripts/host.py``'s ``host_dir()`` (or ``$TIPAI_HOST``), holds it in use while it runs (as the host
tests do), and works in this checkout's own ComfyUI instance (``install_pack``; ``python3 scripts/host.py
--instance`` prints it), never in the host's shared ComfyUI folder: the tiny random SD1.5 checkpoint and
the tiny auditor come from ``make_default_models`` (generated when missing or stale); any other ``--ckpt``
must be in the instance's ``models/checkpoints``, any other ``--auditor`` in its ``models/tipai``. ComfyUI
is imported in process with the instance as its base directory (as tests/host/comfy_inprocess.py does);
this checkout is imported by path, and no custom_nodes folder is loaded. ComfyUI picks the device:
``--cpu`` is set only when torch sees no CUDA.

Both sides get the same model, prompt, latent, seed, steps, CFG, sampler and scheduler:

    plain   nodes.common_ksampler(model, ...)                  ComfyUI's own KSampler
    TiPAI   TiPAIKSampler.execute(model, ..., miner, guard, policy)   (with its VAE decode of the result
            for the overlay, which the plain side does not do: that is part of what the node costs)

One row per setting of K (Region Miner k: regions per audit), N (TSPO Sampler n: candidates per region),
the audit interval (Tournament Guard audit_every; audit_first 2, skip_last 1) and d (TSPO Sampler depths,
one value: the inversion depth). Columns:

    plain s / tipai s   median wall time of ``--repeats`` timed runs each (plain and TiPAI alternate, so
                        a busy neighbour slows both), after one untimed warm-up pair per row and one for
                        the whole script (model and auditor loading are not timed)
    ratio               median TiPAI / median plain
    best                fastest TiPAI / fastest plain run (as timeit reports: the slower runs mostly measure
                        the neighbours on a shared machine)
    x/base              report summary extra_model_calls / base_model_calls (the audits' denoiser calls,
                        restarts included, per sampler call)
    apply x/plain       apply_model calls measured by the pack's APPLY_MODEL wrapper during the audits
                        (report["extra"]["extra_apply_model_calls"]) / apply_model calls of the plain run
                        (counted once, on a clone with a counting wrapper). A batch of N candidates is one call.
    peak dMiB           peak memory of the TiPAI run minus that of the plain run, measured on the warm-up
                        pair of the row. CUDA: torch.cuda.max_memory_allocated above memory_allocated at the
                        start of the call (tensors only). CPU: process RSS sampled every 2 ms above the RSS at
                        the start of the call, after gc and glibc malloc_trim (all memory, not only tensors;
                        coarse: memory the allocator kept from earlier runs is reused unseen, so it can read
                        low, even slightly negative; trust differences of several MiB, not one). The
                        auditor's weights, loaded once before, are not in it.
    audits/regions/cands/acc   from the report summary: audited steps, mined regions, candidates, accepted
    identical           the TiPAI latent equals the plain latent bit for bit (torch.equal)

Two rows are there to check the promises: "nothing mined" (a Region Miner with threshold 1.0 and
min_area = max_area = 0.5, the node's limits: a region would need half the view saturated, so none
passes: the audits still decode and compute saliency, but run no tournament; its ratio should be near 1
and its latent identical) and "accept none" (a guard with δ at the node's maximum, GUARD_DELTA_MAX in
nodes/defaults.py, "never accept": full tournaments, nothing accepted, the latent must be identical to
plain). On a machine shared with other work the timings are
noisy; pass --threads 1 there: with more intra-op threads than free cores, every call stalls on the
neighbours (one run of the defaults took 12 minutes at a load average of 5 on 2 cores).

The default grid (7 rows: the two checks at K=2 N=4 every=3 d=2, then K, N, the interval and d varied one at
a time from K=1 N=2 every=3 d=1) makes 28 plain and 28 TiPAI runs at 64x64 and 10 steps; at the
uncontended 2-core times seen here (about 0.5 s plain, 2-3 s TiPAI) that is about 2 minutes with loading,
much more when the cores are shared. ``--rows "K,N,every,d;..."`` sets another grid. With the tiny random
auditor the miner often finds fewer than K regions, so read the regions column rather than K.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import importlib.util
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY_CHECKPOINT = "tipai_tiny_sd15.safetensors"
TINY_AUDITOR = "tipai_tiny_auditor.safetensors"
TINY_ARCH = "tipai-tiny-vit"
PACK_NAME = "tipai_bench_pack"
PROMPT = "a red circle left of a blue square"

# (label, K, N, audit_every, d, special) — special: "" | "nothing_mined" | "accept_none"
DEFAULT_GRID = [
    ("nothing mined", 2, 4, 3, 2, "nothing_mined"),
    ("accept none", 2, 4, 3, 2, "accept_none"),
    ("", 1, 2, 3, 1, ""),
    ("", 2, 2, 3, 1, ""),
    ("", 1, 4, 3, 1, ""),
    ("", 1, 2, 2, 1, ""),
    ("", 1, 2, 3, 2, ""),
]


# --- arguments and grid ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_tipai_ksampler.py", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64, help="image width and height in pixels (default 64)")
    p.add_argument("--steps", type=int, default=10, help="sampling steps (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side and row, after a warm-up (default 3)")
    p.add_argument("--batch", type=int, default=1, help="latent batch size (default 1)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="normal")
    p.add_argument("--delta", type=float, default=0.0, help="guard δ of the grid rows (default 0: accept any win)")
    p.add_argument("--audit-scales", default="1.0", help="Tournament Guard audit_scales (default '1.0')")
    p.add_argument(
        "--ckpt", default=TINY_CHECKPOINT, help="a checkpoint in this checkout's instance's models/checkpoints"
    )
    p.add_argument("--auditor", default=TINY_AUDITOR, help="auditor weights in this checkout's instance's models/tipai")
    p.add_argument("--arch", default=TINY_ARCH, help="open_clip architecture of --auditor")
    p.add_argument(
        "--rows",
        help="grid rows 'K,N,every,d;...' instead of the default grid (the two check rows "
        "are always added, with the first row's K,N,every,d)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device-note", default="", help="free text printed with the results (e.g. the machine)")
    return p


def build_grid(rows: str | None) -> list[tuple]:
    """The grid of (label, K, N, every, d, special): the default one, or the two check rows at the first of
    ``rows`` ('K,N,every,d;...') followed by ``rows``. Raises ValueError on a malformed ``rows``."""
    if not rows:
        return DEFAULT_GRID
    custom = [tuple(int(v) for v in r.split(",")) for r in rows.split(";") if r.strip()]
    if not custom or any(len(r) != 4 for r in custom):
        raise ValueError("--rows wants 'K,N,every,d;K,N,every,d;...'")
    first = custom[0]
    return [("nothing mined", *first, "nothing_mined"), ("accept none", *first, "accept_none")] + [
        ("", *r, "") for r in custom
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, with ``grid`` (``build_grid``) added."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    try:
        args.grid = build_grid(args.rows)
    except ValueError as exc:
        p.error(str(exc))
    return args


# --- host, instance, ComfyUI and the pack ------------------------------------------------------------------


def _load_host_builder():
    spec = importlib.util.spec_from_file_location("tipai_host_builder", REPO / "scripts" / "host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locate_host(hb, argv: list[str]) -> Path:
    """The host folder; re-executes this script with the host's Python when started with another one."""
    host = Path(os.environ.get("TIPAI_HOST") or hb.host_dir())
    if not hb.is_built(host):
        sys.exit(f"the ComfyUI test host is not built at {host}; run `python3 scripts/host.py` first")
    py = hb.venv_python(host)
    if Path(sys.prefix).resolve() != (host / "venv").resolve():
        if os.environ.get("TIPAI_BENCH_REEXEC"):
            sys.exit(f"run this with the host's Python: {py} {Path(__file__).name}")
        print(f"[bench] re-running with the host's Python: {py}", flush=True)
        env = dict(os.environ, TIPAI_BENCH_REEXEC="1", TIPAI_HOST=str(host))
        os.execve(str(py), [str(py), str(Path(__file__).resolve()), *argv], env)
    return host


def prepare_instance(hb, host: Path, ckpt: str, auditor: str) -> Path:
    """This checkout's ComfyUI instance (``install_pack``), with the tiny checkpoint and auditor generated by
    ``make_default_models`` when either is asked for (it skips current files); the host is not touched."""
    instance = hb.install_pack(host, REPO)
    if ckpt == TINY_CHECKPOINT or auditor == TINY_AUDITOR:
        hb.make_default_models(host, instance)
    checkpoints = instance / "models" / "checkpoints"
    if not (checkpoints / ckpt).is_file():
        sys.exit(f"checkpoint {ckpt!r} is not in {checkpoints}")
    return instance


def import_comfy(comfy_code: Path, instance: Path):
    """ComfyUI in this process serving ``instance``, in the order docs/host.md gives (device flag and base
    directory before folder_paths, utils before nodes)."""
    import torch

    if "folder_paths" in sys.modules:
        raise RuntimeError("folder_paths was imported before the base directory could be set")
    if str(comfy_code) not in sys.path:
        sys.path.insert(0, str(comfy_code))
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    comfy.cli_args.args.base_directory = str(instance)
    import folder_paths
    import utils.extra_config  # noqa: F401  (must precede `nodes`)

    if Path(folder_paths.base_path).resolve() != instance.resolve():
        raise RuntimeError(f"ComfyUI serves {folder_paths.base_path}, not the instance {instance}")
    import nodes

    return nodes


def import_pack():
    """This checkout as a package, as ComfyUI imports a custom node folder (without loading custom_nodes)."""
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_NAME, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    import asyncio

    extension = asyncio.run(sys.modules[PACK_NAME].comfy_entrypoint())
    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}


# --- measuring ---------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one call above its start. CUDA: allocated tensor bytes. CPU: sampled process RSS."""

    def __init__(self, cuda: bool):
        import torch

        self.torch, self.cuda = torch, cuda
        self.what = (
            "torch.cuda.max_memory_allocated above the start (tensors)"
            if cuda
            else "process RSS sampled every 2 ms above the start, after gc + malloc_trim (all memory)"
        )
        self._trim = None
        if not cuda:
            import psutil

            self._proc = psutil.Process()
            try:
                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                self._trim = None

    def measure(self, fn):
        """(result, peak bytes above the start)."""
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            base = self.torch.cuda.memory_allocated()
            out = fn()
            self.torch.cuda.synchronize()
            return out, self.torch.cuda.max_memory_allocated() - base
        if self._trim is not None:
            self._trim(0)
        base = self._proc.memory_info().rss
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], self._proc.memory_info().rss)
                stop.wait(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            out = fn()
        finally:
            stop.set()
            thread.join()
        peak[0] = max(peak[0], self._proc.memory_info().rss)
        return out, peak[0] - base


@dataclass
class Row:
    label: str
    k: int
    n: int
    every: int
    d: int
    special: str
    plain_s: float = 0.0
    tipai_s: float = 0.0
    best_ratio: float = 0.0
    summary: dict | None = None
    extra_apply: int = 0
    mem_delta: int = 0
    identical: bool = False

    @property
    def name(self) -> str:
        return self.label or f"K={self.k} N={self.n} every={self.every} d={self.d}"


@dataclass
class Baseline:
    """The plain side's reference latent, its apply_model calls per run, and whether it repeats bit for bit."""

    reference: Any
    calls: int
    repeat_identical: bool


# --- the two sides -----------------------------------------------------------------------------------------


class Workload:
    """What both sides share (model, prompt, latent, seed, steps, CFG, sampler, scheduler) and the two
    runners: ``plain()`` (ComfyUI's KSampler) and ``tipai(row)`` (the TiPAI KSampler at that row's setting)."""

    def __init__(self, args: argparse.Namespace, nodes, pack: dict, cuda: bool):
        import torch

        self.torch, self.args, self.nodes, self.pack, self.cuda = torch, args, nodes, pack, cuda
        # CLIP stays loaded, as in a ComfyUI graph (its outputs are cached): freeing it would hand ~230 MiB
        # back to the OS and the CPU peak-memory figure (RSS above the start) would read higher
        self.model, self.clip, self.vae = nodes.CheckpointLoaderSimple().load_checkpoint(args.ckpt)[:3]
        self.pos = nodes.CLIPTextEncode().encode(self.clip, PROMPT)[0]
        self.neg = nodes.CLIPTextEncode().encode(self.clip, "blurry")[0]
        self.latent = nodes.EmptyLatentImage().generate(args.size, args.size, args.batch)[0]
        self.auditor = pack["TiPAIAuditorLoader"].execute(args.auditor, args.arch, "none", "none", 1.0).args[0]
        # the Tournament Guard's largest δ, "never accept" (the node refuses more)
        self.never_delta = importlib.import_module(f"{PACK_NAME}.nodes.defaults").GUARD_DELTA_MAX

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def plain(self, model=None):
        a = self.args
        out = self.nodes.common_ksampler(
            self.model if model is None else model,
            a.seed,
            a.steps,
            a.cfg,
            a.sampler,
            a.scheduler,
            self.pos,
            self.neg,
            self.latent,
        )[0]["samples"]
        self.sync()
        return out

    def settings(self, r: Row):
        """(miner, guard, policy) of a row, made by the pack's own nodes."""
        pack = self.pack
        # nothing mined: the widgets' limits (threshold 1, min_area = max_area = 1/2) leave no region
        threshold, min_area = (1.0, 0.5) if r.special == "nothing_mined" else (0.6, 0.02)
        miner = pack["TiPAIRegionMiner"].execute(r.k, threshold, min_area, 0.5, 2, 1.0, 1.0, None).args[0]
        delta = self.never_delta if r.special == "accept_none" else self.args.delta
        guard = (
            pack["TiPAITournamentGuard"]
            .execute(delta, 0.0, 0.0, 0.0, 0.0, 1.0, r.every, 2, 1, self.args.audit_scales)
            .args[0]
        )
        policy = pack["TiPAITSPOSampler"].execute(r.n, 0, str(r.d), "3.0, 6.0", "0.0", "0", "1", "invert").args[0]
        return miner, guard, policy

    def tipai(self, r: Row):
        """(latent samples, report) of the TiPAI KSampler at row ``r``."""
        a = self.args
        miner, guard, policy = self.settings(r)
        out = self.pack["TiPAIKSampler"].execute(
            self.model,
            a.seed,
            a.steps,
            a.cfg,
            a.sampler,
            a.scheduler,
            self.pos,
            self.neg,
            self.latent,
            1.0,
            PROMPT,
            self.vae,
            self.auditor,
            miner,
            None,
            guard,
            policy,
        )
        latent_out, report, _overlay = out.args
        self.sync()
        return latent_out["samples"], report

    def counting_model(self):
        """A clone of the model that counts its apply_model calls in ``calls[0]`` (the timed plain runs use
        the model as loaded): (clone, calls)."""
        import comfy.patcher_extension

        calls = [0]

        def count(executor, *a, **kw):
            calls[0] += 1
            return executor(*a, **kw)

        counted = self.model.clone()
        counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "tipai_bench_count", count)
        return counted, calls


def warm_up(work: Workload, last: Row) -> Baseline:
    """The script's warm-up: the reference plain run, a counted plain run, one TiPAI run (auditor onto its
    device, first decode, first tournament) and a plain repeat."""
    counted, calls = work.counting_model()
    reference = work.plain()
    counted_latent = work.plain(counted)
    plain_calls = calls[0]
    work.tipai(last)
    torch = work.torch
    repeat_identical = torch.equal(work.plain(), reference) and torch.equal(counted_latent, reference)
    return Baseline(reference, plain_calls, repeat_identical)


def run_row(work: Workload, r: Row, mem: PeakMemory, reference, repeats: int) -> None:
    """One row: its warm-up pair (where peak memory, the report and identity are taken), then ``repeats``
    alternating timed plain/TiPAI runs; fills ``r``."""
    _, plain_peak = mem.measure(work.plain)
    (samples, report), tipai_peak = mem.measure(lambda: work.tipai(r))
    r.mem_delta = tipai_peak - plain_peak
    r.identical = work.torch.equal(samples.cpu(), reference.cpu())
    r.summary = report["summary"]
    r.extra_apply = int(report["extra"]["extra_apply_model_calls"])
    pt, tt = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work.plain()
        pt.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        work.tipai(r)
        tt.append(time.perf_counter() - t0)
    r.plain_s, r.tipai_s = statistics.median(pt), statistics.median(tt)
    r.best_ratio = min(tt) / min(pt)


# --- the report --------------------------------------------------------------------------------------------


def print_header(args: argparse.Namespace, cuda: bool, mem: PeakMemory, base: Baseline) -> None:
    import comfy.model_management as mm
    import torch

    device = mm.get_torch_device()
    dev_name = (
        torch.cuda.get_device_name(device)
        if cuda
        else f"CPU, torch threads {torch.get_num_threads()}, {os.cpu_count()} cores visible"
    )
    print()
    print(
        f"TiPAI KSampler vs ComfyUI KSampler — {args.ckpt}, {args.size}x{args.size}, batch {args.batch}, "
        f"{args.steps} steps, {args.sampler}/{args.scheduler}, cfg {args.cfg}, seed {args.seed}"
    )
    print(f"device: {device} ({dev_name}){'  — ' + args.device_note if args.device_note else ''}")
    print(
        f"guard: δ={args.delta:g} (rows), τ_P=τ_F=0, α=1, audit_first=2, skip_last=1, scales {args.audit_scales}; "
        f"miner threshold 0.6, area 0.02–0.5; policy cfg_inside 3/6, jitter 0, dilation 0, feather 1, invert"
    )
    print(
        f"timing: median of {args.repeats} timed runs per side (plain/TiPAI alternating) after 1 warm-up pair "
        f"per row and 1 for the script; 'best' = fastest TiPAI / fastest plain"
    )
    print(f"memory: {mem.what}, TiPAI peak − plain peak, on the warm-up pair")
    print(
        f"plain apply_model calls per run: {base.calls}; plain repeat bit-identical: "
        f"{'yes' if base.repeat_identical else 'NO'}"
    )
    print()


def print_table(rows: list[Row], plain_calls: int) -> None:
    head = (
        f"{'row':<14}{'K':>3}{'N':>3}{'every':>6}{'d':>3} | {'plain s':>8}{'tipai s':>8}{'ratio':>7}{'best':>6} | "
        f"{'x/base':>7}{'apply x/plain':>14} | {'peak dMiB':>9} | {'audits':>6}{'regions':>8}{'cands':>6}"
        f"{'acc':>4} | identical"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        s = r.summary
        ratio = r.tipai_s / r.plain_s if r.plain_s > 0 else float("nan")
        xb = s.get("extra_call_ratio")
        xb = "-" if xb is None else f"{xb:.2f}"
        print(
            f"{r.label:<14}{r.k:>3}{r.n:>3}{r.every:>6}{r.d:>3} | "
            f"{r.plain_s:>8.3f}{r.tipai_s:>8.3f}{ratio:>7.2f}{r.best_ratio:>6.2f} | "
            f"{xb:>7}{f'{r.extra_apply}/{plain_calls}':>14} | {r.mem_delta / 2**20:>9.1f} | "
            f"{s['audited_steps']:>6}{s['regions']:>8}{s['candidates']:>6}{s['accepted']:>4} | "
            f"{'yes' if r.identical else 'no'}"
        )
    print()


def print_checks(rows: list[Row], t_start: float) -> bool:
    """The two check rows' verdicts and the closing notes; True when the checks pass."""
    checks = {r.special: r for r in rows if r.special}
    if "nothing_mined" in checks:
        r = checks["nothing_mined"]
        print(
            f"check 'nothing mined': regions={r.summary['regions']} (want 0), ratio "
            f"{r.tipai_s / r.plain_s:.2f} (want near 1), identical {'yes' if r.identical else 'NO'}"
        )
    if "accept_none" in checks:
        r = checks["accept_none"]
        print(
            f"check 'accept none':   regions={r.summary['regions']} (want > 0), accepted={r.summary['accepted']} "
            f"(want 0), latent bit-identical to plain: {'yes' if r.identical else 'NO'}"
        )
    print(
        "x/base counts the editor's denoiser calls plus one restart per accepted step; apply x/plain counts only "
        "calls made inside the audits (a restart is a sampler call). 'identical no' is expected where acc > 0."
    )
    print(
        f"total {time.perf_counter() - t_start:.0f} s. Timings on a shared machine are noisy; compare ratios "
        f"within one run."
    )
    return all(r.identical for r in checks.values()) and all(
        r.summary["regions"] == 0 for r in rows if r.special == "nothing_mined"
    )


# --- main --------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, comfy_code: Path, instance: Path) -> int:
    """Load ComfyUI and the pack, warm up, time every row, print the report; 0 when the checks pass."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    t_start = time.perf_counter()
    nodes = import_comfy(comfy_code, instance)
    import comfy.utils

    comfy.utils.set_progress_bar_enabled(False)  # the same for both sides, and a readable output
    work = Workload(args, nodes, import_pack(), cuda)
    mem = PeakMemory(cuda)
    rows = [Row(*spec) for spec in args.grid]
    print(
        f"[bench] loaded ComfyUI, {args.ckpt} and the auditor in {time.perf_counter() - t_start:.1f} s; "
        f"global warm-up ...",
        flush=True,
    )
    base = warm_up(work, rows[-1])
    for i, r in enumerate(rows):
        run_row(work, r, mem, base.reference, args.repeats)
        print(
            f"[bench] row {i + 1}/{len(rows)} done ({r.name}): plain {r.plain_s:.2f} s, TiPAI {r.tipai_s:.2f} s",
            flush=True,
        )
    print_header(args, cuda, mem, base)
    print_table(rows, base.calls)
    return 0 if print_checks(rows, t_start) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    hb = _load_host_builder()
    host = locate_host(hb, argv)
    with hb.in_use(host):
        instance = prepare_instance(hb, host, args.ckpt, args.auditor)
        return run(args, host / "ComfyUI", instance)


if __name__ == "__main__":
    sys.exit(main())
