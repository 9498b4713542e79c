"""The region prompt of Inpaint Biases (arXiv 2405.18762, step 3): a local language model rewrites the
user's prompt into precise, concept-specific guidance for the one region the user marked as wrong.

Inputs: the whole prompt p, an optional description of what the region should show, and optional hints
from the auditor (for example the prompt phrase whose Grad-CAM peaks in the region, or the phrase the
auditor finds weakest there). The model gets an instruction (``instruction``: a system message saying
what an inpainting prompt for one region is, and a user message holding p, the description and the
hints), through its chat template when the tokenizer has one (``build_inputs``), and writes at most
``max_new_tokens`` tokens. The answer's first line, with a leading "Region prompt:" label, quotes and a
final full stop removed (``clean``), is the region prompt p_R that the region is inpainted with.

Decoding: greedy (``temperature = 0``, the default) or sampling at ``temperature`` from the model's own
distribution (no top-k, no top-p), seeded: the draws come from torch's generator seeded with ``seed``
inside ``torch.random.fork_rng``, so a run leaves the caller's random state as it found it, and the
same seed gives the same text. Decoding stops at EOS, at a newline after some text, or after
``max_new_tokens``. Between tokens the library's ``interrupt.check()`` is called (a StoppingCriteria
runs after every token), so a Cancel stops the rewrite within one token.

With ``allowed_words`` the output is made only of those words (``vocabulary.WordConstraint`` as a
LogitsProcessor: every token that would leave the vocabulary's grammar gets -inf; see that module), and
the instruction lists the words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .. import interrupt
from .vocabulary import WordConstraint, check_words, constraint_for, finish

MAX_NEW_TOKENS = 256  # a region prompt is a phrase; more is a typo and minutes of CPU
DEFAULT_MAX_NEW_TOKENS = 32
MAX_TEMPERATURE = 2.0
# below this a temperature divides the logits into inf and the softmax into NaN (1e-300 does): 0 means greedy
MIN_TEMPERATURE = 1e-3
MAX_SEED = 2**64 - 1  # torch.manual_seed's range
MAX_HINTS = 16
MAX_LISTED_WORDS = 200  # a vocabulary up to this size is written into the instruction

SYSTEM = (
    "You write prompts for an image inpainting model. One region of an image made from the user's prompt "
    "came out wrong and will be painted again with your prompt. Write the prompt for that region only: a "
    "short, concrete phrase naming what the region must show, with its colour, shape, material, count and "
    "position where they matter. Do not describe the rest of the image. Answer with the phrase only, on "
    "one line, without quotes."
)
_LABEL = re.compile(r"^\s*(region prompt|prompt|answer|phrase)\s*:\s*", re.IGNORECASE)
_QUOTES = " \t\"'`“”‘’«»"


class EmptyAnswer(ValueError):
    """The model wrote nothing usable (every other ValueError here is a bad argument)."""


@dataclass(frozen=True)
class RegionPrompt:
    """The rewrite: ``text`` (p_R), the model's ``raw`` answer, how many tokens it wrote and why it stopped
    (``"eos"``, ``"newline"`` or ``"length"``)."""

    text: str
    raw: str
    new_tokens: int
    stop: str


def parse_hints(hints: str | Iterable[str]) -> tuple[str, ...]:
    """Hints as a tuple of non-empty phrases: a text is split at newlines and semicolons."""
    if isinstance(hints, str):
        parts: Iterable[str] = re.split(r"[\n;]", hints)
    else:
        parts = list(hints)
        if not all(isinstance(h, str) for h in parts):
            raise ValueError("hints must be text or a list of texts")
    out = tuple(h.strip() for h in parts if h.strip())
    if len(out) > MAX_HINTS:
        raise ValueError(f"hints holds {len(out)} phrases; at most {MAX_HINTS}")
    return out


def instruction(
    prompt: str,
    region_description: str = "",
    hints: Sequence[str] = (),
    allowed_words: Sequence[str] | None = None,
) -> tuple[str, str]:
    """(system message, user message) asking for the region prompt."""
    lines = [f"Image prompt: {prompt.strip()}"]
    if region_description.strip():
        lines.append(f"The region should show: {region_description.strip()}")
    if hints:
        lines.append(f"Auditor hints about the region: {'; '.join(hints)}")
    if allowed_words is not None and len(allowed_words) <= MAX_LISTED_WORDS:
        lines.append(f"Use only these words: {' '.join(allowed_words)}")
    lines.append("Region prompt:")
    return SYSTEM, "\n".join(lines)


def build_inputs(tokenizer, system: str, user: str) -> torch.Tensor:
    """The instruction as input ids ``[1, L]``: through the tokenizer's chat template when it has one (a template
    without a system role gets the system text in the user message), else as plain text."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template that refuses the system role (jinja raises its own error)
            merged = [{"role": "user", "content": f"{system}\n\n{user}"}]
            text = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer(f"{system}\n\n{user} ", return_tensors="pt")["input_ids"]
    return ids


def clean(raw: str) -> str:
    """The region prompt in an answer: its first non-empty line, without a "Region prompt:" label, quotes, a final
    full stop or repeated spaces."""
    line = next((ln for ln in raw.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip(_QUOTES).rstrip(" .").strip(_QUOTES)
    return " ".join(line.split())


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends the answer: the generation config's EOS ids and the tokenizer's."""
    found: list[int] = []
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if isinstance(i, int) and i not in found:
                found.append(i)
    return found


class _VocabularyProcessor(LogitsProcessor):
    """``WordConstraint`` as a LogitsProcessor: logits of tokens outside the vocabulary's grammar become -inf."""

    def __init__(self, constraint: WordConstraint, tokenizer, prompt_len: int):
        self.constraint, self.tokenizer, self.prompt_len = constraint, tokenizer, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = []
        for b in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[b, self.prompt_len :], skip_special_tokens=True)
            allowed = self.constraint.mask(text).to(scores.device)
            rows.append(scores[b].masked_fill(~allowed, -math.inf))
        out = torch.stack(rows)
        return out


class _TokenSteps(StoppingCriteria):
    """Runs after every generated token: the host's interruption check, the progress callback, and the stop at a
    newline that follows some text."""

    def __init__(self, tokenizer, prompt_len: int, on_token: Callable[[int], None] | None, stop_at_newline: bool):
        self.tokenizer, self.prompt_len, self.on_token = tokenizer, prompt_len, on_token
        self.stop_at_newline = stop_at_newline
        self.newline = False

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        interrupt.check()
        if self.on_token is not None:
            self.on_token(int(input_ids.shape[1] - self.prompt_len))
        done = False
        if self.stop_at_newline:
            text = self.tokenizer.decode(input_ids[0, self.prompt_len :], skip_special_tokens=True)
            done = self.newline = "\n" in text.lstrip()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def check_arguments(prompt, region_description, seed, max_new_tokens, temperature) -> None:
    """The rewrite's own argument checks (each names the argument and its range)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt is empty; give the prompt of the image whose region is repainted")
    if not isinstance(region_description, str):
        raise ValueError(f"region_description must be text, got {type(region_description).__name__}")
    for name, value, lo, hi in (("seed", seed, 0, MAX_SEED), ("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS)):
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"{name} must be a whole number in [{lo}, {hi}], got {value!r}")
    check_temperature(temperature)


def check_temperature(temperature) -> None:
    """0 (greedy), or a finite sampling temperature in [MIN_TEMPERATURE, MAX_TEMPERATURE]."""
    ok = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not ok or not math.isfinite(temperature) or not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be a finite number in [0.0, {MAX_TEMPERATURE}], got {temperature!r}")
    if 0.0 < temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {temperature!r}"
        )


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def generate_region_prompt(
    model,
    tokenizer,
    prompt: str,
    region_description: str = "",
    hints: str | Iterable[str] = (),
    seed: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    allowed_words: Iterable[str] | None = None,
    on_token: Callable[[int], None] | None = None,
) -> RegionPrompt:
    """The region prompt p_R and how it was written (see the module doc). ``on_token(n)`` is called after the
    n-th generated token. Raises ValueError on bad arguments and when the answer holds no text."""
    check_arguments(prompt, region_description, seed, max_new_tokens, temperature)
    hint_list = parse_hints(hints)
    words = None if allowed_words is None else check_words(allowed_words)
    system, user = instruction(prompt, region_description, hint_list, words)
    device = next(model.parameters()).device
    input_ids = build_inputs(tokenizer, system, user).to(device)
    prompt_len = int(input_ids.shape[1])
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and prompt_len + max_new_tokens > limit:
        raise ValueError(
            f"prompt is too long: the instruction takes {prompt_len} tokens, and with max_new_tokens "
            f"{max_new_tokens} that passes the model's {limit}; shorten the prompt or the hints"
        )
    ends = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (ends[0] if ends else 0)
    # every knob set here, so that none comes from the model's own generation config
    knobs = dict(max_new_tokens=max_new_tokens, num_beams=1, repetition_penalty=1.0, eos_token_id=ends or None)
    if temperature > 0:  # the model's distribution at this temperature: no top-k, no top-p
        knobs.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
    else:
        knobs.update(do_sample=False)
    config = GenerationConfig(pad_token_id=pad, **knobs)
    processors = LogitsProcessorList()
    if words is not None:
        constraint = constraint_for(tokenizer, words, ends, int(model.get_output_embeddings().weight.shape[0]))
        processors.append(_VocabularyProcessor(constraint, tokenizer, prompt_len))
    steps = _TokenSteps(tokenizer, prompt_len, on_token, stop_at_newline=words is None)
    interrupt.check()
    with torch.random.fork_rng(devices=_rng_devices(device)), torch.no_grad():
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([steps]),
        )
    new = out[0, prompt_len:]
    n = int(new.shape[0])
    stop = "newline" if steps.newline else ("eos" if n and int(new[-1]) in ends else "length")
    raw = tokenizer.decode(new, skip_special_tokens=True)
    text = finish(raw, words) if words is not None else clean(raw)
    if not text:
        raise EmptyAnswer(
            f"the language model answered with no usable text ({raw!r} after {n} tokens); try another seed, "
            "a higher max_new_tokens or a clearer region description"
        )
    return RegionPrompt(text, raw, n, stop)


def refine_region_prompt(
    model,
    tokenizer,
    prompt: str,
    region_description: str = "",
    hints: str | Iterable[str] = (),
    seed: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    allowed_words: Iterable[str] | None = None,
    on_token: Callable[[int], None] | None = None,
) -> str:
    """The refined region prompt p_R, a short phrase (``generate_region_prompt(...).text``)."""
    return generate_region_prompt(
        model, tokenizer, prompt, region_description, hints, seed, max_new_tokens, temperature, allowed_words, on_token
    ).text
