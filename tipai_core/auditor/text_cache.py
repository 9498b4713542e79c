"""Per-prompt cache of text features e_t = E_t(p).

An audited sampling run scores many tournaments against the same prompt (and the same policy-class
texts), so E_t runs once per distinct text. Entries live on the device they were computed on and are
moved on read if the auditor has moved since (the ComfyUI memory manager offloads models freely).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch


class TextFeatureCache:
    """LRU map text -> unit-norm embedding [D]; ``encode`` batches all misses into one E_t call."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], max_entries: int = 512) -> None:
        self._encode = encode
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.max_entries = int(max_entries)
        self.misses = 0  # number of texts encoded so far (tests and logs read it)

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, text: str) -> bool:
        return text in self._store

    def clear(self) -> None:
        self._store.clear()

    def get(self, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
        """[T,D] features of ``texts`` in order; unseen texts are encoded together in one call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._store))
        if missing:
            with torch.no_grad():
                feats = self._encode(missing).detach()
            self.misses += len(missing)
            for text, feat in zip(missing, feats):
                self._store[text] = feat
        out = []
        for text in texts:
            self._store.move_to_end(text)
            feat = self._store[text]
            if device is not None and feat.device != torch.device(device):
                feat = feat.to(device)
                self._store[text] = feat
            out.append(feat)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return torch.stack(out)
