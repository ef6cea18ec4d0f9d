"""Local-disk helpers that both ends use."""
