"""Evaluations of TiPAI in worlds with a ground truth: ``python -m tipai_core.eval <world>`` (shapes)."""
