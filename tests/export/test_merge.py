"""`vlmtune merge`: equivalence, merging twice, stock-transformers loading, QLoRA, and missing pieces."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from export_helpers import write_lora_run
from vlmtune.cli import main


def _files(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model's state dict as transformers names it (files may use the family's original key names)."""
    from transformers import AutoModelForImageTextToText

    return {k: v.detach() for k, v in AutoModelForImageTextToText.from_pretrained(folder).state_dict().items()}


@pytest.fixture(scope="module")
def merged(lora_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "merged"
    assert main(["merge", str(lora_run), "--out", str(out), "--verify"]) == 0
    return out


def test_merged_folder_is_standard(merged):
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "generation_config.json", "chat_template.jinja", "README.md", "processor_config.json"} <= names
    assert any(n.endswith(".safetensors") for n in names) and not any(n.endswith(".bin") for n in names)
    assert not [p for p in merged.parent.iterdir() if p.name.startswith(".")]  # the temp folder is gone
    keys = _files(merged)
    assert not [k for k in keys if "lora_" in k or "base_layer" in k or "modules_to_save" in k]
    assert "vlmtune merge" in (merged / "README.md").read_text()


def test_merged_weights_equal_w_plus_ba(merged, lora_run, tiny_vlm):
    base, out = _weights(tiny_vlm), _weights(merged)
    adapter = load_file(str(lora_run / "final" / "adapter_model.safetensors"))
    cfg = json.loads((lora_run / "final" / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    checked = 0
    for key, a in adapter.items():
        if ".lora_A." not in key:
            continue
        b = adapter[key.replace("lora_A", "lora_B")]
        wkey = key.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
        assert wkey in base, wkey
        torch.testing.assert_close(out[wkey], base[wkey] + scale * b @ a, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked >= 8
    assert any("vision_tower" in k for k in adapter)  # LoRA on the vision tower merged too
    # the trained projector (modules_to_save) replaced the base's
    proj = [k for k in adapter if "multi_modal_projector" in k]
    assert proj
    for k in proj:
        wkey = k.replace("base_model.model.", "")
        torch.testing.assert_close(out[wkey], adapter[k])
        assert not torch.equal(out[wkey], base[wkey])


def test_merging_twice_gives_the_same_folder(merged, lora_run, tmp_path):
    again = tmp_path / "again"
    assert main(["merge", str(lora_run / "final"), "--out", str(again)]) == 0
    a, b = _weights(merged), _weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an existing output is refused unless --overwrite
    assert main(["merge", str(lora_run), "--out", str(again)]) == 2
    assert main(["merge", str(lora_run), "--out", str(again), "--overwrite"]) == 0


def test_stock_transformers_loads_and_generates(merged):
    code = textwrap.dedent(f"""
        import sys
        from PIL import Image
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({str(merged)!r})
        processor = AutoProcessor.from_pretrained({str(merged)!r})
        msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is this?"}}]}}]
        prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
        assert prompt.endswith("USER: <image>\\nWhat is this? ASSISTANT:"), prompt
        inputs = processor(images=[Image.new("RGB", (32, 32), (200, 10, 10))], text=[prompt], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        assert out.shape[1] > inputs["input_ids"].shape[1]
        bad = [m for m in sys.modules if m.split(".")[0] in ("vlmtune", "peft")]
        assert not bad, bad
        print("GENERATED", repr(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "GENERATED" in r.stdout


def test_verify_fails_beyond_tolerance(lora_run, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["merge", str(lora_run), "--out", str(out), "--verify", "--tolerance", "0"]) == 1
    err = capsys.readouterr()
    assert "largest" in err.out + err.err
    assert not out.exists()


def test_qlora_adapter_merges_into_dequantized_base(tiny_vlm, tmp_path, capsys):
    run = write_lora_run(tiny_vlm, tmp_path / "qrun", quantization="4bit")
    out = tmp_path / "qmerged"
    assert main(["merge", str(run), "--out", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "4bit" in text and "dequantized" in text
    base, merged = _weights(tiny_vlm), _weights(out)
    k = "model.language_model.layers.0.mlp.gate_proj.weight"
    assert not torch.equal(base[k], merged[k])
    assert "QLoRA" in (out / "README.md").read_text()


def test_missing_base_is_exit_2(lora_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    info = json.loads((run / "final" / "vlmtune_run.json").read_text())
    info["base_model"] = str(tmp_path / "gone")
    (run / "final" / "vlmtune_run.json").write_text(json.dumps(info))
    assert main(["merge", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "gone" in capsys.readouterr().err


def test_missing_projector_is_exit_2(tiny_vlm, tmp_path, capsys):
    run = write_lora_run(tiny_vlm, tmp_path / "noproj", with_projector=False)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("projector: frozen", "projector: full"))
    assert main(["merge", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "projector" in capsys.readouterr().err


def test_adapter_from_another_base_is_exit_2(tiny_vlm, tmp_path, capsys):
    from vlmtune.models.tiny import build_tiny_llava

    other = build_tiny_llava(tmp_path / "other", hidden=32)
    run = write_lora_run(other, tmp_path / "otherrun")
    info = json.loads((run / "final" / "vlmtune_run.json").read_text())
    info["base_model"] = str(tiny_vlm)
    (run / "final" / "vlmtune_run.json").write_text(json.dumps(info))
    assert main(["merge", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "another base" in capsys.readouterr().err


def test_not_an_adapter_or_model_is_exit_2(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello")
    assert main(["merge", str(tmp_path / "x"), "--out", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_missing_or_broken_adapter_weights_is_exit_2(lora_run, tmp_path, capsys, damage):
    """Regression: a deleted adapter_model.safetensors made peft go to the Hub and crash with a traceback."""
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    weights = run / "final" / "adapter_model.safetensors"
    if damage == "deleted":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:100])
    assert main(["merge", str(run), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "adapter_model.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
