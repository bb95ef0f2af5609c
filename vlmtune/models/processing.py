"""Tokenizer/processor facts for a model folder or hub id, without loading its weights.

    info = load_processing("llava-hf/llava-1.5-7b-hf")
    info.tokenizer, info.image_processor, info.image_token, info.image_seq_len (576), info.default_template
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtune.errors import ModelLoadError
from vlmtune.models.registry import Family, get_family


@dataclass
class ProcessingInfo:
    tokenizer: Any
    processor: Any  # the full processor for a VLM (None for an LLM)
    image_processor: Any
    image_token: str | None
    image_seq_len: int | None
    default_template: str
    family: Family
    config: Any


def read_config(path: str, trust_remote_code: bool = False):
    """AutoConfig with a clear error for anything that is not a model folder."""
    from transformers import AutoConfig

    p = Path(path)
    if p.exists() and not (p / "config.json").is_file():
        hint = " It looks like a peft adapter: pass its base model (and the adapter with --adapter)." \
            if (p / "adapter_config.json").is_file() else ""
        raise ModelLoadError(f"{path} is not a model folder (no config.json).{hint}")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelLoadError(f"{path} needs its own model code; pass --trust-remote-code (or "
                                 "`model.trust_remote_code: true`) only if you trust it.") from None
        raise ModelLoadError(f"{path}: {e}") from None
    except OSError as e:
        raise ModelLoadError(f"cannot load a model config from {path}: {str(e).splitlines()[0]}") from None


def image_seq_len_of(config, processor) -> int | None:
    """How many tokens one image expands to (LLaVA: patches, +CLS, -1 when the CLS is dropped)."""
    n = getattr(config, "image_seq_length", None)
    vc = getattr(config, "vision_config", None)
    if vc is not None and getattr(vc, "image_size", None) and getattr(vc, "patch_size", None):
        n = (vc.image_size // vc.patch_size) ** 2
        n += getattr(processor, "num_additional_image_tokens", 0) or 0
        if getattr(config, "vision_feature_select_strategy", "default") == "default":
            n -= 1
    return n


def load_processing(path: str, trust_remote_code: bool = False) -> ProcessingInfo:
    from transformers import AutoProcessor, AutoTokenizer

    config = read_config(path, trust_remote_code)
    family = get_family(config.model_type)
    if family.kind == "llm":
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        return ProcessingInfo(tok, None, None, None, None, family.default_template, family, config)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelLoadError(f"cannot load the processor of {path}: {str(e).splitlines()[0]}") from None
    tok = processor.tokenizer
    image_token = getattr(processor, "image_token", None) or "<image>"
    return ProcessingInfo(tok, processor, getattr(processor, "image_processor", None), image_token,
                          image_seq_len_of(config, processor), family.default_template, family, config)
