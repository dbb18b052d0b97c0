"""Text encoding through transformers: UMT5 (Wan), T5 (Cosmos-Predict2); Cosmos3 reads token ids
directly. Real checkpoints bring their own tokenizer files (AutoTokenizer, local files only);
the tiny default uses a byte-level tokenizer that needs no download.

The encoder may stay on the CPU (--text-encoder-device cpu): the 5.7B-parameter UMT5-XXL is
run once per prompt, so keeping it off the accelerator frees memory for the DiT.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from phyx.errors import CheckpointError

BYTE_TOKENIZER_FILE = "phyx_byte_tokenizer.json"


class ByteTokenizer:
    """UTF-8 bytes as ids: 0 pad, 1 eos, 2 unk, byte b -> b + 3. Deterministic, no vocabulary
    file, so tests and the tiny demo work on a fresh machine."""

    pad_token_id, eos_token_id, offset = 0, 1, 3
    vocab_size = 256 + 3

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        mask = torch.zeros(len(texts), max_length, dtype=torch.long)
        for i, t in enumerate(texts):
            row = [b + self.offset for b in t.encode("utf-8")][: max_length - 1] + [self.eos_token_id]
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / BYTE_TOKENIZER_FILE).write_text(json.dumps({"type": "byte", "offset": self.offset,
                                                                 "vocab_size": self.vocab_size}))


class HFTokenizer:
    """A transformers tokenizer loaded from local files (no hub access)."""

    def __init__(self, directory: Path):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True,
                                                 trust_remote_code=False)  # never run a checkpoint's code

    def __call__(self, texts, max_length):
        enc = self.tok(texts, padding="max_length", truncation=True, max_length=max_length,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return enc.input_ids, enc.attention_mask


def load_tokenizer(directory: str | Path):
    directory = Path(directory)
    if (directory / BYTE_TOKENIZER_FILE).exists():
        return ByteTokenizer()
    if not directory.is_dir() or not any(directory.iterdir()):
        raise CheckpointError(f"tokenizer directory {directory} is missing or empty (expected "
                              f"tokenizer files, or {BYTE_TOKENIZER_FILE} for the byte tokenizer)")
    return HFTokenizer(directory)


ENCODERS = ("umt5", "t5")


def tiny_text_encoder(kind: str, d_model: int, seed: int = 0):
    """A 2-layer UMT5 / T5 encoder with seeded weights and the byte tokenizer's vocabulary."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    cfg_cls, model_cls = (UMT5Config, UMT5EncoderModel) if kind == "umt5" else (T5Config, T5EncoderModel)
    cfg = cfg_cls(vocab_size=ByteTokenizer.vocab_size, d_model=d_model, d_kv=8, num_heads=4, d_ff=2 * d_model,
                  num_layers=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                  feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                  decoder_start_token_id=0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(cfg)
    return model.eval()


def load_text_encoder(kind: str, directory: str | Path, dtype=torch.float32, device="cpu"):
    from transformers import T5EncoderModel, UMT5EncoderModel

    directory = Path(directory)
    if not (directory / "config.json").exists() or not (list(directory.glob("*.safetensors"))):
        raise CheckpointError(f"text encoder directory {directory} needs config.json and .safetensors "
                              f"weights (Wan's official .pth T5 must first be converted with "
                              f"`phyx convert`)")
    cls = UMT5EncoderModel if kind == "umt5" else T5EncoderModel
    model = cls.from_pretrained(str(directory), torch_dtype=dtype, use_safetensors=True)
    return model.to(device).eval()


def encode(encoder, tokenizer, prompts: list[str], max_length: int, zero_pad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (embeddings [B, max_length, D] float32 with padding positions zeroed, lengths [B]).

    Wan trims each prompt to its length and zero-pads to text_len; Cosmos-Predict2 zeroes the
    padding positions: both are 'zero after the last real token', done here once."""
    ids, mask = tokenizer(prompts, max_length)
    dev = next(encoder.parameters()).device
    with torch.no_grad():
        h = encoder(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state.float().cpu()
    if zero_pad:
        h = h * mask.unsqueeze(-1).to(h.dtype)
    return h, mask.sum(dim=1)
