"""Load the model a training config asks for: compose a LLaVA, or load an existing VLM or LLM.

    loaded = load_model_for_training(cfg.model, template="vicuna_v1", dtype=torch.float32)
    loaded.model, loaded.processor, loaded.tokenizer, loaded.family, loaded.composed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmtune.config import ModelConfig
from vlmtune.errors import ModelLoadError
from vlmtune.models.processing import image_seq_len_of, read_config
from vlmtune.models.registry import Family, get_family


@dataclass
class LoadedModel:
    model: Any
    processor: Any  # LlavaProcessor-like for a VLM, the tokenizer for an LLM
    tokenizer: Any
    family: Family
    composed: bool
    image_token: str | None
    image_seq_len: int | None

    @property
    def image_processor(self):
        return getattr(self.processor, "image_processor", None)


def quantization_config(kind: str | None, skip_modules: list[str]):
    """bitsandbytes settings for QLoRA (NF4, double quant, bf16 compute) or 8-bit."""
    if not kind:
        return None
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip_modules)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)


def load_model_for_training(mcfg: ModelConfig, *, template: str, dtype=torch.float32) -> LoadedModel:
    from vlmtune.models.compose import compose_llava, load_projector

    if mcfg.path is None:
        # The LLM alone is quantized; vision tower and projector stay in full precision.
        qcfg = quantization_config(mcfg.quantization, ["lm_head"])
        model, processor = compose_llava(
            mcfg.vision_encoder, mcfg.language_model, projector_type=mcfg.projector_type,
            vision_feature_layer=mcfg.vision_feature_layer,
            vision_feature_select_strategy=mcfg.vision_feature_select_strategy, template=template, dtype=dtype,
            trust_remote_code=mcfg.trust_remote_code, quantization_config=qcfg)
        family = get_family("llava")
        composed = True
    else:
        config = read_config(mcfg.path, mcfg.trust_remote_code)
        family = get_family(config.model_type)
        composed = False
        kw = dict(dtype=dtype, trust_remote_code=mcfg.trust_remote_code)
        if mcfg.attn_implementation:
            kw["attn_implementation"] = mcfg.attn_implementation
        if family.kind == "vlm":
            from transformers import AutoModelForImageTextToText, AutoProcessor

            # Full module prefixes: transformers 5 matches skip entries from the start of a name (or as a
            # suffix), so a bare `vision_tower` would no longer keep `model.vision_tower.*` unquantized.
            skip = [p for p in family.vision + family.projector if p] + ["lm_head"]
            model = AutoModelForImageTextToText.from_pretrained(
                mcfg.path, quantization_config=quantization_config(mcfg.quantization, skip), **kw)
            processor = AutoProcessor.from_pretrained(mcfg.path, trust_remote_code=mcfg.trust_remote_code)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(
                mcfg.path, quantization_config=quantization_config(mcfg.quantization, ["lm_head"]), **kw)
            processor = AutoTokenizer.from_pretrained(mcfg.path, trust_remote_code=mcfg.trust_remote_code)
            if processor.pad_token is None:
                processor.pad_token = processor.unk_token or processor.eos_token

    if mcfg.projector_from:
        if family.kind != "vlm" or not family.projector:
            raise ModelLoadError("`model.projector_from` is set but the model has no projector (a text-only LLM).")
        load_projector(model, mcfg.projector_from)

    tokenizer = getattr(processor, "tokenizer", processor)
    if family.kind == "vlm":
        image_token = getattr(processor, "image_token", None) or "<image>"
        seq_len = image_seq_len_of(model.config, processor)
    else:
        image_token, seq_len = None, None
    return LoadedModel(model, processor, tokenizer, family, composed, image_token, seq_len)
