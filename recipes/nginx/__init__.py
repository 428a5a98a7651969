"""nginx recipe (placeholder until written)."""
