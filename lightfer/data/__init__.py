"""Dataset adapters: each turns a dataset as distributed into the one manifest contract."""
