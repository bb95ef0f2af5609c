"""`vlmtune demo --quick` through the CLI, and text-only LLM SFT / continued pretraining with the same command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training_helpers import read_metrics, train_cli, write_yaml


def test_demo_quick_report(tmp_path, capsys):
    from vlmtune.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    for part in ("before", "after"):
        assert isinstance(report[part]["accuracy"], float) and 0 <= report[part]["accuracy"] <= 1
    paths = [report["merged_model"], report["runs"]["base"], report["runs"]["finetune"], report["eval_images"]]
    for rel in paths:
        assert not Path(rel).is_absolute() and (out / rel).exists(), rel
    assert (out / report["merged_model"] / "config.json").is_file()
    for run in (report["runs"]["base"], report["runs"]["finetune"]):
        assert (out / run / "config.yaml").is_file() and (out / run / "final").is_dir()


TEXT_RECORDS = {
    "sft": [{"instruction": f"Spell the digit {i % 10}.", "output": f"It is {w}."}
            for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"] * 2)],
    "pretrain": [{"text": f"The digit {i % 10} is written {w}. Hello! How can I help you today?"}
                 for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"] * 2)],
}


@pytest.mark.parametrize("kind", list(TEXT_RECORDS))
def test_text_only_llm(kind, tiny_parts, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = tmp_path / f"{kind}.json"
    data.write_text(json.dumps(TEXT_RECORDS[kind]))
    run = tmp_path / "run"
    cfg = {"output_dir": str(run),
           "model": {"path": str(tiny_parts["llm"]), "vision": "frozen", "projector": "frozen", "llm": "lora"},
           "data": {"path": str(data), "max_length": 256},
           "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "save_steps": 0},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    assert train_cli(write_yaml(tmp_path / "cfg.yaml", cfg)) == 0
    rows = read_metrics(run)
    assert len(rows) == 2 and all(r["loss"] > 0 and r["trained_tokens"] > 0 for r in rows)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_parts["llm"]), run / "final")
    assert all(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)
