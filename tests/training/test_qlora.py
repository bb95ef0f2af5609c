"""One QLoRA step on this CPU: the LLM's linears are bitsandbytes Linear4bit (NF4, double quant), the vision
tower and projector stay unquantized, and the adapter saves."""

from __future__ import annotations

import torch

from training_helpers import load_adapter, read_metrics, train_cli, vlm_config, write_yaml


def test_one_qlora_step(tiny_vlm, digits, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    import vlmtune.models.adapters as adapters

    seen = {}
    real = adapters.apply_training_modes

    def capture(model, *a, **k):
        seen["model"] = real(model, *a, **k)
        return seen["model"]

    monkeypatch.setattr(adapters, "apply_training_modes", capture)
    run = tmp_path / "run"
    cfg = vlm_config(tiny_vlm, digits, run, vision="frozen", projector="full", llm="lora")
    cfg["model"]["quantization"] = "4bit"
    cfg["train"]["max_steps"] = 1
    assert train_cli(write_yaml(tmp_path / "cfg.yaml", cfg)) == 0

    model = seen["model"]
    kinds = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith(("lora_A.default", "lora_B.default")):
            part = "llm" if ".language_model." in name else "vision" if ".vision_tower." in name else \
                "projector" if ".multi_modal_projector." in name else "other"
            kinds.setdefault(part, set()).add(type(module).__name__)
    assert kinds["llm"] == {"Linear4bit"}
    assert "Linear4bit" not in kinds["vision"] | kinds["projector"]
    q = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)).weight.quant_state
    assert q.quant_type == "nf4" and q.nested  # double quantization
    rows = read_metrics(run)
    assert len(rows) == 1 and rows[0]["loss"] > 0 and not rows[0].get("skipped_update")
    adapter = load_adapter(tiny_vlm, run / "final")  # loads onto the unquantized base
    assert any("lora_B" in n and p.abs().max() > 0 for n, p in adapter.named_parameters())
