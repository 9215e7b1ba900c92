"""Build tooling: the pinned Go tools the engine and cluster tests run (see toolchain.py)."""
