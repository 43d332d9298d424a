"""Peers side by side: in-process baselines vs the Triton ensemble."""
