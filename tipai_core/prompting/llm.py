"""A local causal language model: a transformers folder or a single GGUF file, never the hub.

Two kinds of file are loaded, both with ``local_files_only=True`` and never ``trust_remote_code``:

* a **transformers folder**: ``config.json``, the weights as ``*.safetensors`` (one file or shards with
  their ``model.safetensors.index.json``) and the tokenizer files. Torch pickles (``*.bin``) are not
  read, and a config that asks for remote code (``auto_map``) is refused;
* a **GGUF file** (``*.gguf``, e.g. llama.cpp quantisations such as Q4_1), read through transformers'
  GGUF support (``gguf_file=``, needs the ``gguf`` package): the tokenizer and config come from the
  file's own metadata and the quantised tensors are dequantised to torch (float32, or ``dtype``). The
  architectures transformers can read this way are its ``GGUF_SUPPORTED_ARCHITECTURES`` (llama, mistral,
  qwen2, qwen3, gemma, phi3, ...).

A missing file raises FileNotFoundError naming it; a file that is there but cannot be read (not GGUF,
truncated, an architecture transformers cannot build) raises ValueError naming it and saying why.
transformers is imported inside the loader, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass
class LocalLM:
    """A loaded causal LM: the transformers model (eval, no gradients), its tokenizer, and where it came from."""

    model: Any
    tokenizer: Any
    path: str
    kind: str  # "gguf" or "folder"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def nbytes(self) -> int:
        """Bytes of the weights and buffers, each tensor counted once (tied embeddings are one tensor)."""
        return tensor_bytes(self.model)


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes held by ``module``'s parameters and buffers, a tensor shared by two names counted once."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def is_gguf(path: str | Path) -> bool:
    """True when ``path`` is a file that starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def check_folder(path: Path) -> None:
    """A transformers folder the loader accepts: config.json without remote code, safetensors weights, a tokenizer."""
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: a transformers language model folder needs config.json")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config} is not a readable JSON config: {exc}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{config} is not a transformers config (a JSON object)")
    if cfg.get("auto_map"):
        raise ValueError(f"{config} asks for remote code (auto_map); the pack never runs a model's own code")
    if not list(path.glob("*.safetensors")):
        raise FileNotFoundError(f"no .safetensors weights in {path} (only safetensors are loaded, never *.bin)")
    if not any((path / n).is_file() for n in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer in {path}: expected one of {', '.join(TOKENIZER_FILES)}")


def check_gguf(path: Path) -> None:
    """A GGUF file the loader can try: it exists, has the suffix and the magic, and the gguf package is there."""
    if not path.is_file():
        raise FileNotFoundError(f"language model file not found: {path}")
    if path.suffix.lower() != GGUF_SUFFIX:
        raise ValueError(f"{path} is not a GGUF file (*{GGUF_SUFFIX}) nor a transformers folder")
    if not is_gguf(path):
        raise ValueError(f"{path} is not a GGUF file: it does not start with the GGUF magic bytes (corrupt?)")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError:
        raise ValueError(f"{path} is a GGUF file, and reading it needs the 'gguf' package: pip install gguf") from None


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers reads a GGUF file three times for one load (config, tokenizer, weights), each a full
    parse of its metadata (a 49k-word vocabulary takes seconds), and builds gguf's tensor-name map once per
    module. Within this block both are made once: the reader of a path is kept and reused (it is only
    read from), and the name map is memoised by its arguments. This halves a SmolLM2 GGUF's load on a CPU
    (``benchmarks/bench_region_prompt.py``). Both names are restored on exit."""
    import gguf

    real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple, Any] = {}

    def reader(path, *args, **kwargs):
        key = (str(Path(path).resolve()), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real_reader(path, *args, **kwargs)
        return readers[key]

    names = vars(gguf)  # the module's own namespace: a function stands in for a class here, on purpose
    names["GGUFReader"], names["get_tensor_name_map"] = reader, functools.lru_cache(maxsize=None)(real_map)
    try:
        yield
    finally:
        names["GGUFReader"], names["get_tensor_name_map"] = real_reader, real_map


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> LocalLM:
    """Load a local causal LM from a transformers folder or a ``.gguf`` file, on the CPU, in ``dtype``.

    The caller moves it to a device (inside ComfyUI its model management does). Nothing is downloaded."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"language model not found: {path} (a .gguf file or a transformers folder)")
    extra: dict[str, Any]
    if path.is_dir():
        check_folder(path)
        kind, where, extra = "folder", str(path), {"use_safetensors": True}
    else:
        check_gguf(path)
        kind, where, extra = "gguf", str(path.parent), {"gguf_file": path.name}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = dict(local_files_only=True, trust_remote_code=False, **extra)
    try:
        with _gguf_parsed_once() if kind == "gguf" else contextlib.nullcontext():
            tokenizer = AutoTokenizer.from_pretrained(where, **common)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **common)
    except Exception as exc:  # noqa: BLE001
        # a truncated GGUF fails deep inside the reader (ValueError, IndexError, struct.error, ...), an unknown
        # architecture with ValueError or KeyError: say which file and why, whatever the reader raised
        raise ValueError(f"cannot load the language model {path}: {type(exc).__name__}: {exc}") from None
    model.eval().requires_grad_(False)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LocalLM(model, tokenizer, str(path), kind)
