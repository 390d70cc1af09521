"""Migration quality: verify a move, plan it, re-embed, tune search."""
