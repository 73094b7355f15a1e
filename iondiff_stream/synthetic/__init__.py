"""Synthetic trajectories with known hops (ground truth for tests, demo and benchmarks)."""
