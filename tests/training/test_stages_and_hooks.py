"""Stage defaults, a SigLIP composition, gradient checkpointing, evaluation during training, and samples that
turn bad at training time — each through `vlmtune train`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from training_helpers import read_metrics, train_cli, vlm_config, write_yaml


def test_projector_pretraining_defaults_to_lr_1e3(tmp_path):
    from vlmtune.config import from_dict

    stage1 = from_dict({"model": {"path": "x", "vision": "frozen", "projector": "full", "llm": "frozen"}}).validate()
    stage2 = from_dict({"model": {"path": "x", "llm": "lora"}}).validate()
    chosen = from_dict({"model": {"path": "x", "vision": "frozen", "projector": "full", "llm": "frozen"},
                        "train": {"lr": "2e-5"}}).validate()
    assert (stage1.train.lr, stage2.train.lr, chosen.train.lr) == (1e-3, 2e-4, 2e-5)


def _tiny_siglip(folder: Path) -> Path:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=32, patch_size=8)
    SiglipVisionModel(cfg).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_compose_siglip_stage1_then_stage2(tmp_path, tiny_parts, digits):
    """SigLIP has no CLS token: all 16 patches are image tokens (select strategy `full`)."""
    from transformers import AutoModelForImageTextToText

    siglip = _tiny_siglip(tmp_path / "siglip")
    stage1 = tmp_path / "stage1"
    cfg = {"output_dir": str(stage1),
           "model": {"vision_encoder": str(siglip), "language_model": str(tiny_parts["llm"]),
                     "vision": "frozen", "projector": "full", "llm": "frozen"},
           "data": {"path": str(digits["train"]), "image_folder": str(digits["images"]), "template": "plain",
                    "max_length": 64},
           "train": {"max_steps": 2, "batch_size": 4, "save_steps": 0}}
    assert train_cli(write_yaml(tmp_path / "s1.yaml", cfg)) == 0
    model = AutoModelForImageTextToText.from_pretrained(stage1 / "final")
    assert model.config.vision_feature_select_strategy == "full" and model.config.image_seq_length == 16
    assert model.config.vision_config.model_type == "siglip_vision_model"

    cfg2 = dict(cfg, output_dir=str(tmp_path / "stage2"))
    cfg2["model"] = dict(cfg["model"], projector_from=str(stage1), llm="lora")
    cfg2["data"] = dict(cfg["data"], template="vicuna_v1", max_length=128)
    assert train_cli(write_yaml(tmp_path / "s2.yaml", cfg2)) == 0
    assert (tmp_path / "stage2" / "final" / "adapter_config.json").is_file()


def test_gradient_checkpointing_trains(tmp_path, tiny_vlm, digits):
    cfg = vlm_config(tiny_vlm, digits, tmp_path / "run")
    cfg["train"]["gradient_checkpointing"] = True
    assert train_cli(write_yaml(tmp_path / "c.yaml", cfg)) == 0
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_eval_during_training_logs_accuracy_and_sample_answers(tmp_path, tiny_vlm, digits, capsys):
    records = json.loads(Path(digits["eval"]).read_text())[:4]
    vqa = tmp_path / "vqa.jsonl"
    vqa.write_text("".join(json.dumps({"image": r["image"], "question": "What digit is shown in the image?",
                                       "answers": [r["conversations"][1]["value"]]}) + "\n" for r in records))
    cfg = vlm_config(tiny_vlm, digits, tmp_path / "run")
    cfg["eval"] = {"benchmark": "vqa", "data": str(vqa), "image_folder": str(digits["images"]), "every_steps": 1,
                   "samples": [{"image": records[0]["image"], "question": "What digit is shown in the image?"}],
                   "max_new_tokens": 6}
    assert train_cli(write_yaml(tmp_path / "e.yaml", cfg)) == 0
    rows = read_metrics(tmp_path / "run")
    acc = [r for r in rows if "eval/vqa_accuracy" in r]
    assert [r["step"] for r in acc] == [1, 2] and all(0 <= r["eval/vqa_accuracy"] <= 1 for r in acc)
    answers = [json.loads(line) for line in (tmp_path / "run" / "eval_samples.jsonl").read_text().splitlines()]
    assert [a["step"] for a in answers] == [1, 2] and all(isinstance(a["answer"], str) for a in answers)
    assert "What digit is shown in the image? ->" in capsys.readouterr().out


def test_bad_eval_file_fails_before_training(tmp_path, tiny_vlm, digits, capsys):
    cfg = vlm_config(tiny_vlm, digits, tmp_path / "run")
    cfg["eval"] = {"benchmark": "vqa", "data": str(tmp_path / "missing.jsonl"), "every_steps": 1}
    assert train_cli(write_yaml(tmp_path / "e.yaml", cfg)) == 2
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _digits_copy(digits: dict, dest: Path) -> dict:
    shutil.copytree(digits["images"], dest / "images")
    return {"train": digits["train"], "eval": digits["eval"], "images": dest / "images"}


def test_image_deleted_after_check_is_skipped_logged_and_counted(tmp_path, tiny_vlm, digits):
    data = _digits_copy(digits, tmp_path)
    first = json.loads(Path(data["train"]).read_text())[0]
    (data["images"] / first["image"]).unlink()
    cfg = vlm_config(tiny_vlm, data, tmp_path / "run")
    cfg["train"]["max_steps"] = 16  # every record is seen once (16 x 4 = 64)
    cfg["data"]["max_bad_fraction"] = 0.1
    assert train_cli(write_yaml(tmp_path / "c.yaml", cfg)) == 0
    skipped = [json.loads(line) for line in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert [(s["index"], s["reason"]) for s in skipped] == [(0, "missing-image")]

    cfg["output_dir"] = str(tmp_path / "strict")
    cfg["data"]["strict"] = True
    assert train_cli(write_yaml(tmp_path / "s.yaml", cfg)) == 2


def test_too_many_bad_samples_stop_the_run(tmp_path, tiny_vlm, digits, capsys):
    data = _digits_copy(digits, tmp_path)
    for rec in json.loads(Path(data["train"]).read_text())[:20]:
        (data["images"] / rec["image"]).unlink(missing_ok=True)
    cfg = vlm_config(tiny_vlm, data, tmp_path / "run")
    cfg["train"]["max_steps"] = 16
    assert train_cli(write_yaml(tmp_path / "c.yaml", cfg)) == 2
    assert "max_bad_fraction" in capsys.readouterr().err
