"""Run folders in the trainer's layout, written with peft directly (shared by the export tests)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

LORA_TARGETS = r".*(language_model|vision_tower).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|fc1|fc2)"


def write_lora_run(base: Path, run: Path, *, seed: int = 1, quantization: str | None = None, with_projector: bool = True) -> Path:
    """A RUN folder whose final/ is a non-trivial LoRA adapter (random B, perturbed projector)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS,
                     modules_to_save=["multi_modal_projector"] if with_projector else None)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    final = run / "final"
    pm.save_pretrained(final)
    AutoProcessor.from_pretrained(base).save_pretrained(final)
    (final / "vlmtune_run.json").write_text(json.dumps(
        {"base_model": str(Path(base).resolve()), "kind": "adapter", "quantization": quantization, "template": "vicuna_v1"}))
    (run / "config.yaml").write_text(
        f"output_dir: {run}\nmodel:\n  path: {base}\n  vision: lora\n  projector: {'full' if with_projector else 'frozen'}\n"
        f"  llm: lora\n  quantization: {quantization or 'null'}\ndata:\n  template: vicuna_v1\n")
    return run
