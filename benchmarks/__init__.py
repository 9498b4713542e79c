"""Benchmarks of the TiPAI library; run each as a module from the repository root (python -m benchmarks.<name>)."""
