"""What a run leaves: final/ as a stock-peft adapter (projector inside) or a full HF model, no pickles,
metrics.jsonl, loss.png, TensorBoard events by default, and a config.yaml that reruns."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from training_helpers import read_metrics, subprocess_env, train_cli, vlm_config, write_yaml

STOCK_LOAD = textwrap.dedent('''
    import sys
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText
    base, final = sys.argv[1], sys.argv[2]
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), final)
    names = [n for n, _ in model.named_parameters()]
    assert any("multi_modal_projector.modules_to_save" in n for n in names), "projector not in the adapter"
    assert any("lora_B" in n for n in names)
    assert not any(m == "vlmtune" or m.startswith("vlmtune.") for m in sys.modules)
    print("LOADED", model.peft_config["default"].modules_to_save)
''')


def _no_pickles(run):
    bad = [p for p in run.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    assert not bad, bad


def test_lora_run_folder(tiny_vlm, digits, tmp_path):
    run = tmp_path / "run"
    cfg = vlm_config(tiny_vlm, digits, run, vision="lora", projector="full", llm="lora")
    cfg["train"].update(save_steps=1, eval_steps=1)
    cfg["data"]["eval_path"] = str(digits["eval"])
    assert train_cli(write_yaml(tmp_path / "cfg.yaml", cfg), "train.report_to=tensorboard") == 0

    proc = subprocess.run([sys.executable, "-c", STOCK_LOAD, str(tiny_vlm), str(run / "final")],
                          capture_output=True, text=True, timeout=120, env=subprocess_env(), cwd=tmp_path)
    assert proc.returncode == 0 and "LOADED" in proc.stdout, proc.stderr[-3000:]
    assert "multi_modal_projector" in proc.stdout
    for f in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (run / "final" / f).is_file(), f
    assert (run / "final" / "chat_template.jinja").is_file() or "chat_template" in (run / "final" / "processor_config.json").read_text()
    _no_pickles(run)

    rows = read_metrics(run)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert all({"step", "loss", "lr", "grad_norm", "samples_per_s"} <= r.keys() for r in train_rows)
    assert any("eval_loss" in r for r in rows)
    assert (run / "loss.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1", "step-2"]

    # config.yaml reruns with `vlmtune train` (here into a new folder)
    rerun = tmp_path / "rerun"
    assert train_cli(run / "config.yaml", f"output_dir={rerun}", "train.save_steps=0", "data.eval_path=null") == 0
    assert (rerun / "final" / "adapter_model.safetensors").is_file()


def test_full_finetune_writes_hf_model(tiny_vlm, digits, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run = tmp_path / "run"
    cfg = vlm_config(tiny_vlm, digits, run, vision="full", projector="full", llm="full")
    cfg["train"]["max_steps"] = 1
    assert train_cli(write_yaml(tmp_path / "cfg.yaml", cfg)) == 0
    assert (run / "final" / "config.json").is_file() and not (run / "final" / "adapter_config.json").exists()
    AutoModelForImageTextToText.from_pretrained(run / "final")
    AutoProcessor.from_pretrained(run / "final")
    _no_pickles(run)
