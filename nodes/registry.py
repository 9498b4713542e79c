"""Every node the pack registers. Node ids are public API: saved workflows refer to them, so
an id that has shipped is never renamed or removed."""

from __future__ import annotations

NODES: list = []
