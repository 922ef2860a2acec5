"""The core: one detection type, the adapter contract, targets, geometry, fusion and the engine (no run
loop, no upstream)."""
