"""What the operator sees: the status projection (pure) and its rich rendering."""
