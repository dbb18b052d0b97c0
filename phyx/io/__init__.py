"""phyx.io: what phyx reads and writes on disk: atomic writes, safetensors checkpoints, and the
one offline converter that reads pickled releases (weights_only=True)."""
