"""The loop's region-prompt refiner: a local language model rewrites each mined region's phrase, once.

A ``RegionMiner``'s ``prompter``: the miner has set ``region.prompt`` to the text chosen so far (the
prompt words its Grad-CAM ties to the region, with ``region_prompts=True``), and the refiner asks the
model for that region's prompt p_R with this phrase as the auditor's hint (``generate_region_prompt``).
Answers are cached by (prompt, hint), so a region that the loop mines again at a later audit, or in
another run of the same prompt, costs no second rewrite: decoding is greedy or seeded, so the answer
would be the same. An answer with no usable text keeps the miner's phrase and is counted
(``empty``); every other error is raised (a bad argument is the caller's, not the model's).

With ``allowed_words`` (a small text encoder's vocabulary) the rewrite is made of those words only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..mining.regions import Region
from .region_prompt import DEFAULT_MAX_NEW_TOKENS, EmptyAnswer, check_arguments, generate_region_prompt
from .vocabulary import check_words


class RegionRefiner:
    """``refiner(region, prompt) -> p_R | None``; ``answers`` maps (prompt, hint) to the text written."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        allowed_words: Iterable[str] | None = None,
        seed: int = 0,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
    ):
        check_arguments("prompt", "", seed, max_new_tokens, temperature)  # before any region waits on them
        self.model, self.tokenizer = model, tokenizer
        self.allowed_words = None if allowed_words is None else check_words(allowed_words)
        self.seed, self.max_new_tokens, self.temperature = seed, max_new_tokens, temperature
        self.answers: dict[tuple[str, str], str | None] = {}
        self.calls = 0  # regions asked about
        self.empty = 0  # rewrites that held no usable text
        self.seconds = 0.0  # spent writing (cache hits cost nothing)

    def __call__(self, region: Region, prompt: str) -> str | None:
        self.calls += 1
        hint = (region.prompt or "").strip()
        key = (prompt, hint)
        if key not in self.answers:
            t0 = time.perf_counter()
            try:
                text: str | None = generate_region_prompt(
                    self.model,
                    self.tokenizer,
                    prompt,
                    hints=(hint,) if hint else (),
                    seed=self.seed,
                    max_new_tokens=self.max_new_tokens,
                    temperature=self.temperature,
                    allowed_words=self.allowed_words,
                ).text
            except EmptyAnswer:
                text = None
                self.empty += 1
            self.seconds += time.perf_counter() - t0
            self.answers[key] = text
        return self.answers[key]

    @property
    def written(self) -> int:
        """Rewrites the model made (the cache's misses)."""
        return len(self.answers)
