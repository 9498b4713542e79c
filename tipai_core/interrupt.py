"""Cancellation for long work: the library's loops call ``check()`` between units of work.

The library never imports ComfyUI, so the host installs its own check (ComfyUI's nodes install
``comfy.model_management.throw_exception_if_processing_interrupted``); ``check()`` raises whatever
that function raises. Without a host nothing is installed and ``check()`` does nothing. Units are
small (one denoiser batch, one auditor batch, one saliency signal, one trainer step), so a Cancel
takes effect within one of them.
"""

from __future__ import annotations

from collections.abc import Callable

_check: Callable[[], None] | None = None


def set_check(fn: Callable[[], None] | None) -> None:
    """Install the host's interruption check (None removes it)."""
    global _check
    _check = fn


def check() -> None:
    """Raise the host's interruption, if the user asked for one."""
    if _check is not None:
        _check()
