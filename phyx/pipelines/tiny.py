"""Tiny checkpoints for the built-in default: seeded random weights written to real checkpoint
directories (the same layout and loading code as real checkpoints), built once into a cache
directory (PHYX_CACHE_DIR, default ~/.cache/phyx) and moved into place atomically, so two
processes (or torchrun ranks) racing to build it never see a half-written directory.

Layout (diffusers pipeline style, what `--checkpoint DIR` also reads):
    DIR/transformer/ [+ transformer_2/]   the DiT (A14B: high-noise + low-noise experts)
    DIR/vae/                               diffusers AutoencoderKLWan (config.json + safetensors)
    DIR/text_encoder/ + DIR/tokenizer/     transformers UMT5 / T5 encoder + tokenizer
    DIR/phyx_tiny.json                     what was built, from which recipe and seed
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from phyx.models import registry as model_registry
from phyx.pipelines import registry
from phyx.pipelines import text as text_mod
from phyx.pipelines import vae as vae_mod

RECIPE_VERSION = 2  # bump when a recipe changes: old cache entries are then rebuilt under a new name
MARKER = "phyx_tiny.json"


def cache_root() -> Path:
    return Path(os.environ.get("PHYX_CACHE_DIR", Path.home() / ".cache" / "phyx")) / "tiny"


def _wan_dit(directory: Path, cfg, seed: int) -> dict:
    from phyx.models.wan import save_wan, seeded_model

    # official layout: the only one that carries LingBot's camera layers
    save_wan(seeded_model(cfg, seed), directory, fmt="official")
    return {"latent_channels": cfg.out_dim, "text_dim": cfg.text_dim, "text_len": cfg.text_len}


def _wan_recipe(name: str):
    def build(root: Path, seed: int) -> dict:
        spec = registry.get_spec(name)
        cfg = model_registry.resolve(name).build_config()
        info = _wan_dit(root / "transformer", cfg, seed)
        if spec.moe:  # a second, differently seeded expert: the switch is visible in the output
            _wan_dit(root / "transformer_2", cfg, seed + 1)
        return {**info, "vae": spec.vae, "text_encoder": "umt5"}
    return build


def _predict2_recipe(name: str):
    def build(root: Path, seed: int) -> dict:
        from phyx.models.cosmos_predict2 import make_tiny_checkpoint

        cfg = model_registry.resolve(name).build_config()
        variant = "video2world" if cfg.video2world else "text2image"
        make_tiny_checkpoint(root / "transformer", seed, variant=variant, layout="diffusers")
        return {"latent_channels": cfg.out_channels, "text_dim": cfg.text_embed_dim, "text_len": 16,
                "vae": registry.get_spec(name).vae, "text_encoder": "t5"}
    return build


def _cosmos3_recipe(root: Path, seed: int) -> dict:
    from diffusers.models.autoencoders.autoencoder_cosmos3_audio import Cosmos3AVAEAudioTokenizer

    from phyx.models.cosmos3 import make_tiny_checkpoint, tiny_config

    # the byte tokenizer's 259 ids must fit the embedding table
    make_tiny_checkpoint(root / "transformer", seed, vocab_size=text_mod.ByteTokenizer.vocab_size)
    cfg = tiny_config()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        snd = Cosmos3AVAEAudioTokenizer(sampling_rate=8000, vocoder_input_dim=cfg.sound_dim, dec_dim=8,
                                        dec_c_mults=(1, 2), dec_strides=(4, 5), enc_dim=8, enc_intermediate_dim=16,
                                        enc_num_layers=1, enc_num_blocks=1, enc_latent_dim=12,
                                        enc_c_mults=(1, 2), enc_strides=(4, 5))
    snd.save_pretrained(str(root / "sound_tokenizer"), safe_serialization=True)
    return {"latent_channels": cfg.latent_channel, "vae": "wan2.2", "text_encoder": "tokens"}


# One recipe per tiny model of the registry (keyed by its canonical name), by family. The Wan
# i2v configs have in_dim = latent (4) + mask (4) + conditioning latent (4), as Wan's 16 + 4 + 16.
_BY_FAMILY = {"wan": _wan_recipe, "cosmos-predict2": _predict2_recipe, "cosmos3": lambda name: _cosmos3_recipe}
RECIPES = {name: _BY_FAMILY[spec.family](name) for name, spec in registry.SPECS.items() if spec.tiny}


def _recipe_name(name: str) -> str:
    canon = model_registry.canonical(name)
    if canon not in RECIPES:
        raise ValueError(f"{name!r} is not a tiny model; tiny models: {', '.join(RECIPES)}")
    return canon


def build(recipe: str, directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint of model `recipe` (a tiny model's name or alias) into `directory`
    (not atomic; see ensure())."""
    recipe = _recipe_name(recipe)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    info = RECIPES[recipe](root, seed)
    vae = vae_mod.build_tiny_vae(info["vae"], seed=seed, z_dim=info["latent_channels"])
    vae.save_pretrained(str(root / "vae"), safe_serialization=True)
    if info["text_encoder"] != "tokens":  # Cosmos3 reads token ids: no separate encoder
        enc = text_mod.tiny_text_encoder(info["text_encoder"], info["text_dim"], seed=seed)
        enc.save_pretrained(str(root / "text_encoder"), safe_serialization=True)
    text_mod.ByteTokenizer().save(root / "tokenizer")
    (root / MARKER).write_text(json.dumps({"recipe": recipe, "seed": seed, "version": RECIPE_VERSION, **info},
                                          indent=1))
    return root


def ensure(recipe: str, seed: int = 0) -> Path:
    """The cached tiny checkpoint for `recipe`, built on first use (atomically)."""
    recipe = _recipe_name(recipe)
    final = cache_root() / f"{recipe}-s{seed}-v{RECIPE_VERSION}"
    if (final / MARKER).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(recipe, tmp, seed)
        try:
            os.replace(tmp, final)  # atomic; fails if another process got there first
        except OSError:
            if not (final / MARKER).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
