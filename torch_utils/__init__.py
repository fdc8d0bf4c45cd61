"""PyTorch utilities: ops with reference paths, persistence, misc helpers, training statistics."""
