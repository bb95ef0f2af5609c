"""Compose a LLaVA model (HF `LlavaForConditionalGeneration`) from a vision encoder + projector + LLM.

Weights come from each part's own checkpoint: the loaded vision tower and language model modules
are placed into a LLaVA shell built on the meta device, so nothing is initialised twice.
Only the projector is new (or loaded from a stage-1 run with `load_projector`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlmtune.errors import ModelLoadError
from vlmtune.models.chat_templates import chat_template_for

# vision encoder model_type -> (HF vision-only model type, extra leading tokens it emits, select strategy)
_VISION_ENCODERS = {
    "clip": ("clip_vision_model", 1, "default"),
    "clip_vision_model": ("clip_vision_model", 1, "default"),
    "siglip": ("siglip_vision_model", 0, "full"),  # SigLIP has no CLS to drop
    "siglip_vision_model": ("siglip_vision_model", 0, "full"),
}


def _load_vision(path: str, dtype, trust_remote_code: bool):
    from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if cfg.model_type not in _VISION_ENCODERS:
        raise ModelLoadError(f"{path}: vision encoder model_type `{cfg.model_type}` is not supported for composing; "
                             f"use one of {', '.join(sorted(_VISION_ENCODERS))}.")
    vision_type, extra, strategy = _VISION_ENCODERS[cfg.model_type]
    cls = CLIPVisionModel if vision_type == "clip_vision_model" else SiglipVisionModel
    model = cls.from_pretrained(path, dtype=dtype)
    return model, extra, strategy


def _ensure_tokens(tokenizer, image_token: str) -> bool:
    """Add the image token (and a pad token) if missing. Returns True if the vocabulary grew."""
    before = len(tokenizer)
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
    if tokenizer.pad_token is None:
        # LLaVA pads with unk for Llama; otherwise add a dedicated token rather than reuse EOS,
        # so that padding is never confused with a trained end-of-turn.
        if tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return len(tokenizer) != before


def compose_llava(vision_path: str, llm_path: str, *, projector_type: str = "mlp2x_gelu",
                  vision_feature_layer: int = -2, vision_feature_select_strategy: str = "default",
                  template: str = "vicuna_v1", image_token: str = "<image>", dtype=torch.float32,
                  trust_remote_code: bool = False, quantization_config=None):
    """Build (model, processor). The processor = the encoder's image processor + the LLM's tokenizer."""
    from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    for p, what in ((vision_path, "model.vision_encoder"), (llm_path, "model.language_model")):
        if Path(p).exists() and not (Path(p) / "config.json").is_file():
            raise ModelLoadError(f"`{what}` = {p} is not a model folder (no config.json).")

    vision, extra_tokens, native_strategy = _load_vision(vision_path, dtype, trust_remote_code)
    if native_strategy == "full":
        vision_feature_select_strategy = "full"
    tokenizer = AutoTokenizer.from_pretrained(llm_path, trust_remote_code=trust_remote_code)
    llm = AutoModelForCausalLM.from_pretrained(llm_path, dtype=dtype, trust_remote_code=trust_remote_code,
                                               quantization_config=quantization_config)
    if _ensure_tokens(tokenizer, image_token):
        llm.resize_token_embeddings(len(tokenizer))
    image_processor = AutoImageProcessor.from_pretrained(vision_path)

    vcfg = vision.config
    n_patches = (vcfg.image_size // vcfg.patch_size) ** 2
    image_seq_len = n_patches + extra_tokens - (1 if vision_feature_select_strategy == "default" else 0)
    config = LlavaConfig(
        vision_config=vcfg.to_dict(), text_config=llm.config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(image_token), image_seq_length=image_seq_len,
        vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=vision_feature_select_strategy,
        projector_hidden_act="gelu" if projector_type == "mlp2x_gelu" else "linear",
        tie_word_embeddings=llm.config.tie_word_embeddings,
    )
    config.vision_config.model_type = vcfg.model_type
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = llm.get_decoder() if hasattr(llm, "get_decoder") else llm.model
    model.lm_head = llm.lm_head
    model.model.multi_modal_projector = _new_projector(LlavaMultiModalProjector, config, projector_type, dtype)
    model.config.text_config = llm.config
    model.config.vision_config = vcfg
    if getattr(llm, "generation_config", None) is not None:
        model.generation_config = llm.generation_config
    model.eval()

    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vcfg.patch_size,
                               vision_feature_select_strategy=vision_feature_select_strategy,
                               num_additional_image_tokens=extra_tokens, image_token=image_token,
                               chat_template=chat_template_for(template) or getattr(tokenizer, "chat_template", None))
    return model, processor


def _new_projector(cls, config, projector_type: str, dtype):
    torch.manual_seed(torch.initial_seed())
    proj = cls(config).to(dtype)
    if projector_type == "linear":
        # HF's LLaVA projector is two linears; a `linear` projector (LLaVA-1) is linear_1 with
        # linear_2 fixed to the identity, which spans exactly the same functions.
        with torch.no_grad():
            proj.linear_2.weight.copy_(torch.eye(proj.linear_2.weight.shape[0], dtype=dtype))
            if proj.linear_2.bias is not None:
                proj.linear_2.bias.zero_()
    return proj


PROJECTOR_PREFIX = "model.multi_modal_projector."


def projector_state_from(path: str) -> dict[str, torch.Tensor]:
    """Projector weights (keys `linear_1.weight`, ...) from a run folder, RUN/final, an adapter or a safetensors file."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir() and (p / "final").is_dir():
        p = p / "final"
    files = [p] if p.is_file() else sorted(p.glob("*.safetensors")) if p.is_dir() else []
    if not files:
        raise ModelLoadError(f"`model.projector_from` = {path}: no safetensors weights found there.")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        for key, tensor in load_file(str(f)).items():
            if "multi_modal_projector." not in key and not key.startswith("linear_"):
                continue
            leaf = key.split("multi_modal_projector.", 1)[-1].replace("modules_to_save.default.", "")
            leaf = leaf.replace("original_module.", "")
            out[leaf] = tensor
    if not out:
        raise ModelLoadError(f"`model.projector_from` = {path}: the weights there contain no projector "
                             "(expected keys with `multi_modal_projector.`).")
    return out


def load_projector(model, path: str) -> None:
    state = projector_state_from(path)
    proj = model.model.multi_modal_projector
    missing, unexpected = proj.load_state_dict({k: v.to(next(proj.parameters()).dtype) for k, v in state.items()}, strict=False)
    if missing:
        raise ModelLoadError(f"`model.projector_from` = {path}: projector weights missing {missing}.")
