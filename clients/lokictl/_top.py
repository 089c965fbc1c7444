"""lokictl top (placeholder until written)."""
