"""What trains: each of vision / projector / llm is `frozen`, `lora` or `full`.

LoRA parts get peft adapters on their linear layers (never the projector or lm_head unless asked);
`full` parts are trained whole (inside a peft model they are `modules_to_save`, so they land in the
saved adapter); `frozen` parts get no gradient.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from vlmtune.config import Config
from vlmtune.errors import ConfigError
from vlmtune.models.registry import Family

COMPONENTS = ("vision", "projector", "llm")


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    name = type(module).__name__  # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear, but be explicit
    return name in ("Linear4bit", "Linear8bitLt")


def lora_targets(model: nn.Module, family: Family, cfg: Config) -> list[str]:
    """Full names of the linear modules that get LoRA."""
    modes = {c: getattr(cfg.model, c) for c in COMPONENTS}
    linear_names = [n for n, m in model.named_modules() if _is_linear(m)]
    spec = cfg.lora.target_modules
    if spec is None or spec == "all-linear":
        names = [n for n in linear_names
                 if modes.get(family.component_of(n)) == "lora" and n.split(".")[-1] not in family.no_lora
                 and family.component_of(n) != "projector"]
        if modes["projector"] == "lora":  # asked for explicitly: LoRA on the projector's linears too
            names += [n for n in linear_names if family.component_of(n) == "projector"]
    elif isinstance(spec, str):
        try:
            pattern = re.compile(spec)
        except re.error as e:
            raise ConfigError(f"`lora.target_modules` is not a valid regex: {e}") from None
        names = [n for n in linear_names if pattern.fullmatch(n)]
    elif isinstance(spec, list):
        names = [n for n in linear_names if any(n == s or n.endswith("." + s) for s in spec)]
    else:
        raise ConfigError("`lora.target_modules` must be null, a list of module names, or a regex string.")
    if not names:
        example = ", ".join(linear_names[:3])
        raise ConfigError(f"`lora.target_modules` = {spec!r} matches no linear layer in the LoRA'd parts "
                          f"(module names look like: {example}).")
    return sorted(set(names))


def _modules_to_save(family: Family, cfg: Config) -> list[str]:
    out = []
    for comp in COMPONENTS:
        if getattr(cfg.model, comp) == "full":
            out += [p for p in getattr(family, comp) if p]
    return out


def apply_training_modes(model: nn.Module, family: Family, cfg: Config, *, gradient_checkpointing: bool = False):
    """Freeze / LoRA / fully train each component. Returns the (maybe peft-wrapped) model."""
    uses_lora = any(getattr(cfg.model, c) == "lora" for c in COMPONENTS)
    if family.kind == "llm":
        for comp in ("vision", "projector"):
            if getattr(cfg.model, comp) != "frozen":
                raise ConfigError(f"`model.{comp}: {getattr(cfg.model, comp)}` but {family.model_type} is a text-only LLM; "
                                  f"set `model.{comp}: frozen`.")
    quantized = bool(getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False))
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()

    if not uses_lora:
        for name, p in model.named_parameters():
            p.requires_grad_(getattr(cfg.model, family.component_of(name) or "llm") == "full")
        return model

    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, bias=cfg.lora.bias,
                      target_modules=lora_targets(model, family, cfg),
                      modules_to_save=_modules_to_save(family, cfg) or None,
                      task_type=None if family.kind == "vlm" else "CAUSAL_LM")
    return get_peft_model(model, lcfg)


def base_name(param_name: str) -> str:
    """A parameter's name in the unwrapped model (peft prefixes and wrappers stripped)."""
    name = param_name
    for prefix in ("base_model.model.", "module."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace(".modules_to_save.default", "").replace(".original_module", "").replace(".base_layer", "")


def component_of_param(family: Family, param_name: str) -> str:
    return family.component_of(base_name(param_name)) or "llm"


def param_groups(model: nn.Module, family: Family, cfg: Config) -> list[dict]:
    """AdamW groups: a learning rate per component, no weight decay on biases and norms (1-D tensors)."""
    lrs = {"llm": cfg.train.lr, "projector": cfg.train.projector_lr or cfg.train.lr,
           "vision": cfg.train.vision_lr or cfg.train.lr}
    groups: dict[tuple[str, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        comp = component_of_param(family, name)
        decay = p.ndim >= 2
        g = groups.setdefault((comp, decay), {"params": [], "names": [], "lr": lrs[comp], "component": comp,
                                              "weight_decay": cfg.train.weight_decay if decay else 0.0})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def parameter_table(model: nn.Module, family: Family) -> str:
    """Trainable and frozen parameter counts per component, printed at the start of a run."""
    counts = {c: [0, 0] for c in COMPONENTS}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen or ".original_module." in name:  # peft's frozen copy of a fully-trained module
            continue
        seen.add(id(p))
        n = p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)  # 4-bit packs two weights a byte
        counts[component_of_param(family, name)][0 if p.requires_grad else 1] += n
    rows = [f"{'component':<10} {'trainable':>14} {'frozen':>14}"]
    for comp in COMPONENTS:
        t, f = counts[comp]
        if t or f:
            rows.append(f"{comp:<10} {t:>14,} {f:>14,}")
    total_t = sum(c[0] for c in counts.values())
    total_f = sum(c[1] for c in counts.values())
    rows.append(f"{'total':<10} {total_t:>14,} {total_f:>14,}  ({100 * total_t / max(total_t + total_f, 1):.2f}% trainable)")
    return "\n".join(rows)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
