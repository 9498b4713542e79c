"""Prompts written by a local language model: ``llm`` loads one (a transformers folder or a GGUF file, never
from the hub), ``region_prompt`` rewrites a prompt for one region (Inpaint Biases), ``vocabulary`` holds the
rewrite to the words a small text encoder knows."""
