"""TiPAI core: the decoding-time audit / tournament / guard engine, in pure PyTorch.

This package never imports ComfyUI. Every module uses relative imports only, so it works
both as the top-level ``tipai_core`` (trainers, tests, benchmarks) and as a subpackage of
the ComfyUI pack (``<pack>.tipai_core``). Importing it loads no model. The version has one source:
``[project] version`` in pyproject.toml.
"""
