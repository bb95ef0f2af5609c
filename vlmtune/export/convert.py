"""Convert LLaVA's original checkpoints (the `LlavaLlamaForCausalLM` layout) to the HF llava layout.

    convert_llava_original("llava-v1.5-7b/", "llava-v1.5-7b-hf/", vision_tower="clip-vit-large-patch14-336/")
    convert_llava_original("stage1/mm_projector.bin", "projector/")        # a stage-1 projector alone

The original layout: a Llama checkpoint (`model.layers.*`, `lm_head.*`) plus `model.mm_projector.*`
(and `model.vision_tower.vision_tower.*` when the tower was tuned), with `mm_vision_tower`,
`mm_projector_type`, `mm_vision_select_layer`, `mm_vision_select_feature` and `image_aspect_ratio` in
config.json. Weights are read from safetensors, or from .bin files with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlmtune.errors import ModelLoadError, VlmtuneError

ORIGINAL_PROJECTOR = "model.mm_projector."
ORIGINAL_VISION = "model.vision_tower.vision_tower."


def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Tensors from safetensors files, or from pickled .bin files loaded with weights_only=True (never retried without)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            state.update(load_file(str(f)))
            continue
        try:
            loaded = torch.load(str(f), map_location="cpu", weights_only=True)
        except Exception as e:  # an unsafe pickle (code, unknown classes) or a corrupt file
            raise ModelLoadError(f"{f} can't be loaded safely (weights_only=True): {str(e).splitlines()[0][:300]}. "
                                 "vlmtune never loads pickles that carry code.") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ModelLoadError(f"{f} is not a state dict of tensors.")
        state.update(loaded)
    return state


def _weight_files(folder: Path) -> list[Path]:
    st = sorted(folder.glob("*.safetensors"))
    return st or sorted(p for p in folder.glob("*.bin") if p.name not in ("training_args.bin",))


def _projector_state(state: dict, projector_type: str, where: str) -> dict[str, torch.Tensor]:
    """`model.mm_projector.{0,2}.*` (mlp2x_gelu) or `model.mm_projector.*` (linear) -> HF `linear_{1,2}.*`."""
    proj = {k[len(ORIGINAL_PROJECTOR):]: v for k, v in state.items() if k.startswith(ORIGINAL_PROJECTOR)}
    if not proj:
        raise ModelLoadError(f"{where} has no projector weights (`{ORIGINAL_PROJECTOR}*`).")
    if projector_type == "linear":
        w = proj["weight"]
        out = {"linear_1.weight": w, "linear_2.weight": torch.eye(w.shape[0], dtype=w.dtype)}
        if "bias" in proj:
            out["linear_1.bias"] = proj["bias"]
            out["linear_2.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
        return out
    if projector_type != "mlp2x_gelu":
        raise VlmtuneError(f"mm_projector_type `{projector_type}` can't be expressed by HF llava's two-layer projector; "
                           "supported: mlp2x_gelu, linear.")
    names = {"0": "linear_1", "2": "linear_2"}
    try:
        return {f"{names[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v for k, v in proj.items()}
    except KeyError:
        raise ModelLoadError(f"{where}: unexpected projector keys {sorted(proj)} for mlp2x_gelu.") from None


def _vision_path(cfg: dict, vision_tower: str | None, where: str) -> str:
    path = vision_tower or cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    if not path:
        raise VlmtuneError(f"{where} names no vision tower (`mm_vision_tower`); pass --vision-tower PATH.")
    if not vision_tower and not Path(path).is_dir():
        from transformers import AutoConfig

        try:  # a hub id already in the local cache works; nothing is downloaded implicitly
            AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError):
            raise ModelLoadError(f"the vision tower `{path}` (mm_vision_tower in {where}) is not available locally; "
                                 "pass --vision-tower PATH to its CLIP folder (or download it first).") from None
    return path


def convert_llava_original(src: str, dst: str, *, vision_tower: str | None = None, language_model: str | None = None,
                           overwrite: bool = False, log=print) -> Path:
    """Write an HF llava folder (or, for a stage-1 projector without --language-model, a projector folder) at `dst`."""
    from vlmtune.export.merge import _write_atomically

    s, out = Path(src), Path(dst)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise VlmtuneError(f"{dst} exists and is not empty; pass --overwrite to replace it.")
    if not s.exists():
        raise ModelLoadError(f"{src} does not exist.")
    cfg_file = (s if s.is_dir() else s.parent) / "config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    files = [s] if s.is_file() else _weight_files(s)
    if not files:
        raise ModelLoadError(f"{src} holds no weights (*.safetensors or *.bin).")
    state = read_weights(files)
    has_llm = any(k.startswith("model.layers.") for k in state)
    if not has_llm:
        return _convert_projector(state, cfg, s, out, vision_tower, language_model, overwrite, log)
    if s.is_file() or not cfg_file.is_file():
        raise ModelLoadError(f"{src}: a full LLaVA checkpoint must be a folder with its config.json.")
    if not (cfg.get("mm_vision_tower") or cfg.get("mm_projector_type") or "LlavaLlamaForCausalLM" in (cfg.get("architectures") or [])):
        raise ModelLoadError(f"{src} is not in LLaVA's original layout (no LlavaLlamaForCausalLM / mm_* keys in config.json).")
    model, processor = _build_hf_llava(state, cfg, s, _vision_path(cfg, vision_tower, str(cfg_file)))

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(_card(src, cfg))

    _write_atomically(out, overwrite, write)
    log(f"converted {src} -> {out} (HF LlavaForConditionalGeneration)")
    return out


def _build_hf_llava(state: dict, cfg: dict, src: Path, vision_path: str):
    from transformers import (AutoImageProcessor, AutoTokenizer, CLIPVisionModel, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from vlmtune.models.chat_templates import chat_template_for

    projector_type = cfg.get("mm_projector_type", "linear")
    strategy = {"patch": "default", "cls_patch": "full"}.get(cfg.get("mm_vision_select_feature", "patch"))
    if strategy is None:
        raise VlmtuneError(f"mm_vision_select_feature `{cfg['mm_vision_select_feature']}` is not supported (patch, cls_patch).")
    if cfg.get("mm_use_im_start_end"):
        raise VlmtuneError("checkpoints with mm_use_im_start_end=true (<im_start>/<im_end> around images) have no HF llava equivalent.")
    text_keys = {k: v for k, v in cfg.items() if not k.startswith("mm_") and k not in
                 ("architectures", "model_type", "image_aspect_ratio", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
                  "tokenizer_model_max_length", "tokenizer_padding_side", "use_mm_proj", "mm_patch_merge_type", "unfreeze_mm_vision_tower")}
    text_config = LlamaConfig(**text_keys)
    vision = CLIPVisionModel.from_pretrained(vision_path)
    vcfg = vision.config
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{src}: cannot load its tokenizer: {str(e).splitlines()[0]}") from None
    if "<image>" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or "<pad>"
    image_seq = (vcfg.image_size // vcfg.patch_size) ** 2 + (1 if strategy == "full" else 0)
    config = LlavaConfig(vision_config=vcfg.to_dict(), text_config=text_config.to_dict(),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=image_seq,
                         vision_feature_layer=cfg.get("mm_vision_select_layer", -2), vision_feature_select_strategy=strategy,
                         projector_hidden_act="gelu" if projector_type == "mlp2x_gelu" else "linear",
                         tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)))
    config.vision_config.model_type = vcfg.model_type
    config.image_aspect_ratio = cfg.get("image_aspect_ratio", "square")

    # Original key -> HF key. Vision weights come from the tuned tower in the checkpoint if present.
    hf: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(ORIGINAL_PROJECTOR):
            continue
        if k.startswith(ORIGINAL_VISION):
            hf["model.vision_tower." + k[len(ORIGINAL_VISION):]] = v
        elif k.startswith("model."):
            hf["model.language_model." + k[len("model."):]] = v
        elif k.startswith("lm_head."):
            hf[k] = v
    for k, v in vision.state_dict().items():
        hf.setdefault("model.vision_tower." + k, v)
    for k, v in _projector_state(state, projector_type, str(src)).items():
        hf["model.multi_modal_projector." + k] = v
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(hf))
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing:
        raise ModelLoadError(f"{src}: the checkpoint lacks {len(missing)} weights the model needs, e.g. {missing[:3]}.")
    model.load_state_dict({k: hf[k] for k in expected if k in hf}, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    dtype = next(iter(state.values())).dtype
    model.to(dtype)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.eval()
    processor = LlavaProcessor(image_processor=AutoImageProcessor.from_pretrained(vision_path), tokenizer=tokenizer,
                               patch_size=vcfg.patch_size, vision_feature_select_strategy=strategy,
                               num_additional_image_tokens=1, image_token="<image>", chat_template=chat_template_for("vicuna_v1"))
    return model, processor


def _convert_projector(state, cfg, src: Path, out: Path, vision_tower, language_model, overwrite, log) -> Path:
    """A stage-1 `mm_projector.bin`: a composed HF llava when the parts are given, else the projector alone."""
    from safetensors.torch import save_file

    from vlmtune.export.merge import _write_atomically

    if not any(k.startswith(ORIGINAL_PROJECTOR) for k in state):
        raise ModelLoadError(f"{src} holds neither a LLaVA checkpoint (model.layers.*) nor a projector (model.mm_projector.*).")
    projector_type = cfg.get("mm_projector_type") or ("mlp2x_gelu" if f"{ORIGINAL_PROJECTOR}2.weight" in state else "linear")
    proj = _projector_state(state, projector_type, str(src))
    if language_model is None:
        def write(tmp: Path) -> None:
            save_file({"model.multi_modal_projector." + k: v.contiguous() for k, v in proj.items()}, str(tmp / "projector.safetensors"))
            (tmp / "projector.json").write_text(json.dumps({"projector_type": projector_type, "source": str(src)}, indent=2))

        _write_atomically(out, overwrite, write)
        log(f"stage-1 projector written to {out}/projector.safetensors (use it with `model.projector_from: {out}`, "
            "or pass --language-model and --vision-tower for a full model)")
        return out

    from vlmtune.models.compose import compose_llava

    vision = _vision_path(cfg, vision_tower, str(src))
    model, processor = compose_llava(vision, language_model, projector_type=projector_type,
                                     vision_feature_layer=cfg.get("mm_vision_select_layer", -2),
                                     vision_feature_select_strategy={"cls_patch": "full"}.get(cfg.get("mm_vision_select_feature"), "default"))
    p = model.model.multi_modal_projector
    dtype = next(p.parameters()).dtype
    missing, unexpected = p.load_state_dict({k: v.to(dtype) for k, v in proj.items()}, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{src}: projector weights don't fit (missing {missing}, unexpected {unexpected}).")

    def write_model(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(_card(str(src), cfg))

    _write_atomically(out, overwrite, write_model)
    log(f"composed {vision} + {language_model} + stage-1 projector {src} -> {out}")
    return out


def _card(src: str, cfg: dict) -> str:
    return f"""---
library_name: transformers
tags: [vlmtune, llava, converted]
---
# Converted LLaVA checkpoint

Converted by `vlmtune convert llava-original` from `{src}` (LLaVA's original `LlavaLlamaForCausalLM`
layout) to the Hugging Face `LlavaForConditionalGeneration` layout.

- vision tower: `{cfg.get('mm_vision_tower')}`, select layer {cfg.get('mm_vision_select_layer', -2)}, feature `{cfg.get('mm_vision_select_feature', 'patch')}`
- projector: `{cfg.get('mm_projector_type', 'linear')}`
- image_aspect_ratio: `{cfg.get('image_aspect_ratio', 'square')}` (LLaVA pads images to a square with the processor's
  mean colour when this is `pad`; vlmtune's `data.image_aspect_ratio: pad` does the same)
- chat template: vicuna_v1
"""
