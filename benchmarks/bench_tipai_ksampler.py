"""What TiPAI costs inside ComfyUI: the TiPAI KSampler against ComfyUI's own KSampler, in one run.

How to run it, from the repository root:

    python3 scripts/host.py                                   # build (or find) the test host; prints <host>
    <host>/venv/bin/python benchmarks/bench_tipai_ksampler.py [--size 64] [--steps 10] [--repeats 3]
                                                             [--ckpt NAME] [--sampler euler] [--device-note TEXT]

Started with any other Python, the script re-executes itself with the host's Python. It finds the host
with ``scripts/host.py``'s ``host_dir()`` (or ``$TIPAI_HOST``), and writes the tiny random SD1.5
checkpoint and the tiny auditor into the host's models folders if they are missing or stale, by running
``scripts/tiny_checkpoint.py`` and ``scripts/tiny_auditor.py`` with this Python. ComfyUI is imported in
process (as tests/host/comfy_inprocess.py does); this checkout is imported by path, so the host's
custom_nodes folder is neither needed nor touched. ComfyUI picks the device: ``--cpu`` is set only when
torch sees no CUDA.

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
                        low, even slightly negative; trust differences of several MiB, not one). The auditor's weights, loaded once before,
                        are not in it.
    audits/regions/cands/acc   from the report summary: audited steps, mined regions, candidates, accepted
    identical           the TiPAI latent equals the plain latent bit for bit (torch.equal)

Two rows are there to check the promises: "nothing mined" (a Region Miner with threshold 1.01, so no
region passes: the audits still decode and compute saliency, but run no tournament; its ratio should be
near 1 and its latent identical) and "accept none" (a guard with δ = 1e6: full tournaments, nothing
accepted, the latent must be identical to plain). On a machine shared with other work the timings are
noisy; pass --threads 1 there: with more intra-op threads than free cores, every call stalls on the
neighbours (one run of the defaults took 12 minutes at a load average of 5 on 2 cores).

The default grid (7 rows: the two checks at K=2 N=4 every=3 d=2, then K, N, the interval and d varied one at
a time from K=1 N=2 every=3 d=1) makes 28 plain and 28 TiPAI runs at 64x64 and 10 steps; at the
uncontended 2-core times seen here (about 0.5 s plain, 2-3 s TiPAI) that is about 2 minutes with loading,
much more when the cores are shared. ``--rows "K,N,every,d;..."`` sets another grid. With the tiny random auditor the miner
often finds fewer than K regions, so read the regions column rather than K.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


def _load_host_builder():
    spec = importlib.util.spec_from_file_location("tipai_host_builder", REPO / "scripts" / "host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locate_host(argv: list[str]) -> Path:
    """The host folder; re-executes this script with the host's Python when started with another one."""
    hb = _load_host_builder()
    host = Path(os.environ.get("TIPAI_HOST") or hb.host_dir())
    if not (host / "recipe.json").is_file():
        sys.exit(f"the ComfyUI test host is not built at {host}; run `python3 scripts/host.py` first")
    py = hb.venv_python(host)
    if Path(sys.prefix).resolve() != (host / "venv").resolve():
        if os.environ.get("TIPAI_BENCH_REEXEC"):
            sys.exit(f"run this with the host's Python: {py} {Path(__file__).name}")
        print(f"[bench] re-running with the host's Python: {py}", flush=True)
        env = dict(os.environ, TIPAI_BENCH_REEXEC="1", TIPAI_HOST=str(host))
        os.execve(str(py), [str(py), str(Path(__file__).resolve()), *argv], env)
    return host


def ensure_tiny_models(comfy_dir: Path, ckpt: str, auditor: str) -> None:
    """Write the tiny checkpoint / auditor when they are the ones asked for (each script skips a current file)."""
    if ckpt == TINY_CHECKPOINT:
        subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_checkpoint.py"), str(comfy_dir),
                        str(comfy_dir / "models" / "checkpoints" / ckpt)], check=True, stdout=subprocess.DEVNULL)
    elif not (comfy_dir / "models" / "checkpoints" / ckpt).is_file():
        sys.exit(f"checkpoint {ckpt!r} is not in {comfy_dir / 'models' / 'checkpoints'}")
    if auditor == TINY_AUDITOR:
        subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_auditor.py"), str(comfy_dir / "models" / "tipai")],
                       check=True, stdout=subprocess.DEVNULL)


def import_comfy(comfy_dir: Path):
    """ComfyUI in this process, in the order docs/host.md gives (device flag, utils before nodes)."""
    import torch

    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    import utils.extra_config  # noqa: F401  (must precede `nodes`)
    import nodes

    return nodes


def import_pack():
    """This checkout as a package, as ComfyUI imports a custom node folder (without linking it anywhere)."""
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    import asyncio

    extension = asyncio.run(sys.modules[PACK_NAME].comfy_entrypoint())
    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}


class PeakMemory:
    """Peak memory of one call above its start. CUDA: allocated tensor bytes. CPU: sampled process RSS."""

    def __init__(self, cuda: bool):
        import torch

        self.torch, self.cuda = torch, cuda
        self.what = ("torch.cuda.max_memory_allocated above the start (tensors)" if cuda else
                     "process RSS sampled every 2 ms above the start, after gc + malloc_trim (all memory)")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
    p.add_argument("--ckpt", default=TINY_CHECKPOINT, help="a checkpoint in the host's models/checkpoints")
    p.add_argument("--auditor", default=TINY_AUDITOR, help="auditor weights in the host's models/tipai")
    p.add_argument("--arch", default=TINY_ARCH, help="open_clip architecture of --auditor")
    p.add_argument("--rows", help="grid rows 'K,N,every,d;...' instead of the default grid (the two check rows "
                                  "are always added, with the first row's K,N,every,d)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device-note", default="", help="free text printed with the results (e.g. the machine)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    host = locate_host(argv)
    comfy_dir = host / "ComfyUI"
    ensure_tiny_models(comfy_dir, args.ckpt, args.auditor)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    t_start = time.perf_counter()
    nodes = import_comfy(comfy_dir)
    import comfy.model_management as mm
    import comfy.patcher_extension
    import comfy.utils

    comfy.utils.set_progress_bar_enabled(False)  # the same for both sides, and a readable output

    pack = import_pack()

    grid = DEFAULT_GRID
    if args.rows:
        custom = [tuple(int(v) for v in r.split(",")) for r in args.rows.split(";") if r.strip()]
        if not custom or any(len(r) != 4 for r in custom):
            p.error("--rows wants 'K,N,every,d;K,N,every,d;...'")
        first = custom[0]
        grid = [("nothing mined", *first, "nothing_mined"), ("accept none", *first, "accept_none")] + \
               [("", *r, "") for r in custom]

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(args.ckpt)[:3]
    pos = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    latent = nodes.EmptyLatentImage().generate(args.size, args.size, args.batch)[0]
    auditor = pack["TiPAIAuditorLoader"].execute(args.auditor, args.arch, "none", "none", 1.0).args[0]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def plain(m=model):
        out = nodes.common_ksampler(m, args.seed, args.steps, args.cfg, args.sampler, args.scheduler, pos, neg,
                                    latent)[0]["samples"]
        sync()
        return out

    def settings(r: Row):
        miner = pack["TiPAIRegionMiner"].execute(
            r.k, 1.01 if r.special == "nothing_mined" else 0.6, 0.02, 0.5, 2, 1.0, 1.0, None).args[0]
        guard = pack["TiPAITournamentGuard"].execute(
            1e6 if r.special == "accept_none" else args.delta, 0.0, 0.0, 0.0, 0.0, 1.0, r.every, 2, 1,
            args.audit_scales).args[0]
        policy = pack["TiPAITSPOSampler"].execute(r.n, 0, str(r.d), "3.0, 6.0", "0.0", "0", "1", "invert").args[0]
        return miner, guard, policy

    def tipai(r: Row):
        miner, guard, policy = settings(r)
        out = pack["TiPAIKSampler"].execute(model, args.seed, args.steps, args.cfg, args.sampler, args.scheduler,
                                            pos, neg, latent, 1.0, PROMPT, vae, auditor, miner, None, guard, policy)
        latent_out, report, _overlay = out.args
        sync()
        return latent_out["samples"], report

    # The plain run's apply_model calls, counted on a clone (the timed plain runs use the model as loaded).
    calls = [0]

    def count(executor, *a, **kw):
        calls[0] += 1
        return executor(*a, **kw)

    counted = model.clone()
    counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "tipai_bench_count", count)

    mem = PeakMemory(cuda)
    rows = [Row(label, k, n, every, d, special) for label, k, n, every, d, special in grid]
    print(f"[bench] loaded ComfyUI, {args.ckpt} and the auditor in {time.perf_counter() - t_start:.1f} s; "
          f"global warm-up ...", flush=True)
    reference = plain()
    plain_calls_latent = plain(counted)
    plain_calls = calls[0]
    tipai(rows[-1])  # loads the auditor onto its device, first decode, first tournament
    plain_repeat_identical = torch.equal(plain(), reference) and torch.equal(plain_calls_latent, reference)

    for i, r in enumerate(rows):
        # warm-up pair of this row: also where peak memory is measured
        _, plain_peak = mem.measure(plain)
        (samples, report), tipai_peak = mem.measure(lambda: tipai(r))
        r.mem_delta = tipai_peak - plain_peak
        r.identical = torch.equal(samples.cpu(), reference.cpu())
        r.summary = report["summary"]
        r.extra_apply = int(report["extra"]["extra_apply_model_calls"])
        pt, tt = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            plain()
            pt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tipai(r)
            tt.append(time.perf_counter() - t0)
        r.plain_s, r.tipai_s = statistics.median(pt), statistics.median(tt)
        r.best_ratio = min(tt) / min(pt)
        print(f"[bench] row {i + 1}/{len(rows)} done ({r.label or f'K={r.k} N={r.n} every={r.every} d={r.d}'}): "
              f"plain {r.plain_s:.2f} s, TiPAI {r.tipai_s:.2f} s",
              flush=True)

    device = mm.get_torch_device()
    dev_name = torch.cuda.get_device_name(device) if cuda else f"CPU, torch threads {torch.get_num_threads()}, " \
                                                                f"{os.cpu_count()} cores visible"
    print()
    print(f"TiPAI KSampler vs ComfyUI KSampler — {args.ckpt}, {args.size}x{args.size}, batch {args.batch}, "
          f"{args.steps} steps, {args.sampler}/{args.scheduler}, cfg {args.cfg}, seed {args.seed}")
    print(f"device: {device} ({dev_name}){'  — ' + args.device_note if args.device_note else ''}")
    print(f"guard: δ={args.delta:g} (rows), τ_P=τ_F=0, α=1, audit_first=2, skip_last=1, scales {args.audit_scales}; "
          f"miner threshold 0.6, area 0.02–0.5; policy cfg_inside 3/6, jitter 0, dilation 0, feather 1, invert")
    print(f"timing: median of {args.repeats} timed runs per side (plain/TiPAI alternating) after 1 warm-up pair "
          f"per row and 1 for the script; 'best' = fastest TiPAI / fastest plain")
    print(f"memory: {mem.what}, TiPAI peak − plain peak, on the warm-up pair")
    print(f"plain apply_model calls per run: {plain_calls}; plain repeat bit-identical: "
          f"{'yes' if plain_repeat_identical else 'NO'}")
    print()
    head = (f"{'row':<14}{'K':>3}{'N':>3}{'every':>6}{'d':>3} | {'plain s':>8}{'tipai s':>8}{'ratio':>7}{'best':>6} | "
            f"{'x/base':>7}{'apply x/plain':>14} | {'peak dMiB':>9} | {'audits':>6}{'regions':>8}{'cands':>6}"
            f"{'acc':>4} | identical")
    print(head)
    print("-" * len(head))
    for r in rows:
        s = r.summary
        ratio = r.tipai_s / r.plain_s if r.plain_s > 0 else float("nan")
        xb = s.get("extra_call_ratio")
        xb = "-" if xb is None else f"{xb:.2f}"
        print(f"{r.label:<14}{r.k:>3}{r.n:>3}{r.every:>6}{r.d:>3} | {r.plain_s:>8.3f}{r.tipai_s:>8.3f}{ratio:>7.2f}{r.best_ratio:>6.2f} | "
              f"{xb:>7}{f'{r.extra_apply}/{plain_calls}':>14} | {r.mem_delta / 2**20:>9.1f} | "
              f"{s['audited_steps']:>6}{s['regions']:>8}{s['candidates']:>6}{s['accepted']:>4} | "
              f"{'yes' if r.identical else 'no'}")
    print()
    checks = {r.special: r for r in rows if r.special}
    if "nothing_mined" in checks:
        r = checks["nothing_mined"]
        print(f"check 'nothing mined': regions={r.summary['regions']} (want 0), ratio "
              f"{r.tipai_s / r.plain_s:.2f} (want near 1), identical {'yes' if r.identical else 'NO'}")
    if "accept_none" in checks:
        r = checks["accept_none"]
        print(f"check 'accept none':   regions={r.summary['regions']} (want > 0), accepted={r.summary['accepted']} "
              f"(want 0), latent bit-identical to plain: {'yes' if r.identical else 'NO'}")
    print("x/base counts the editor's denoiser calls plus one restart per accepted step; apply x/plain counts only "
          "calls made inside the audits (a restart is a sampler call). 'identical no' is expected where acc > 0.")
    print(f"total {time.perf_counter() - t_start:.0f} s. Timings on a shared machine are noisy; compare ratios "
          f"within one run.")
    ok = all(r.identical for r in checks.values()) and all(r.summary["regions"] == 0 for r in rows
                                                           if r.special == "nothing_mined")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
