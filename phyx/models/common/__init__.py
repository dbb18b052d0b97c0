"""Model utilities shared by every family: seeded weights (init.py), meta-device builds that keep
TP shard marks (meta.py), and the config dataclass base (config.py)."""
