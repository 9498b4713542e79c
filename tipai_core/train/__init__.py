"""Headless trainers: ``python -m tipai_core.train <stage>``."""
