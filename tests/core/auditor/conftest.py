"""Fixtures: tiny random-weight backbones written to real files (no CLIP weights exist offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tipai_core.testing.auditor_synthetic import write_tiny_open_clip


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory) -> Path:
    return write_tiny_open_clip(tmp_path_factory.mktemp("openclip") / "tiny_clip.safetensors", seed=0)


@pytest.fixture(scope="session")
def zero_shot_auditor(tiny_clip_file):
    from tipai_core.auditor import TINY_ARCH, Auditor

    return Auditor.from_files(tiny_clip_file, arch=TINY_ARCH)


def write_tiny_hf_clip(folder: Path) -> Path:
    """A transformers CLIPModel with random weights and a character-level CLIP BPE tokenizer."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=eos + 1,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory) -> Path:
    return write_tiny_hf_clip(tmp_path_factory.mktemp("hfclip") / "tiny-pickscore")
