"""The submit spec: model and expansion, bounds, loader, and the params it writes (pure)."""
