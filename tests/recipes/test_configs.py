"""The shipped recipes: every one parses and validates; `vlmtune configs list/show/copy` through the real CLI."""

from __future__ import annotations

import pytest
import yaml

from vlmtune import configs
from vlmtune.cli import main
from vlmtune.config import load_config

SHIPPED = configs.names()
EXPECTED = {
    "llava-1.5/7b_pretrain", "llava-1.5/7b_lora", "llava-1.5/7b_finetune", "xtuner/llava_internlm2_chat_7b_qlora",
    "minicpm-v/lora", "assistant/qwen2.5-0.5b_qlora", "demo/tiny_lora",
}


def test_the_published_recipes_are_shipped():
    assert EXPECTED <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_and_validates(name, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(configs.read_text(name))
    cfg = load_config(path)  # unknown keys, wrong types and bad combinations all raise here
    text = configs.read_text(name)
    assert configs.describe(text), f"{name} has no one-line description comment"
    assert f"vlmtune train {name}" in text, f"{name} does not show its own launch command"
    # every float in the file is read as a float (YAML 1.1 reads `1e-4` without a dot as a string)
    assert isinstance(yaml.safe_load(text)["train"]["lr"], float)
    assert cfg.train.lr > 0


def test_published_hyper_parameters():
    load = lambda name: yaml.safe_load(configs.read_text(name))  # noqa: E731
    pre = load("llava-1.5/7b_pretrain")
    assert (pre["model"]["vision"], pre["model"]["projector"], pre["model"]["llm"]) == ("frozen", "full", "frozen")
    assert (pre["train"]["batch_size"], pre["train"]["lr"], pre["data"]["template"]) == (32, 1e-3, "plain")
    lora = load("llava-1.5/7b_lora")
    assert (lora["lora"]["r"], lora["lora"]["alpha"], lora["train"]["projector_lr"]) == (128, 256, 2e-5)
    assert lora["model"]["projector_from"] == "runs/llava-1.5-7b-pretrain/final"
    xt = load("xtuner/llava_internlm2_chat_7b_qlora")
    assert (xt["lora"]["r"], xt["lora"]["alpha"], xt["model"]["quantization"]) == (512, 256, "4bit")
    assert xt["model"]["trust_remote_code"] is True


def test_list_shows_every_name_with_its_description(capsys):
    assert main(["configs", "list"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        line = next(l for l in out.splitlines() if l.split()[0] == name)
        assert configs.describe(configs.read_text(name)) in line


def test_show_prints_the_yaml(capsys):
    assert main(["configs", "show", "llava-1.5/7b_lora"]) == 0
    out = capsys.readouterr().out
    assert out == configs.read_text("llava-1.5/7b_lora")
    assert yaml.safe_load(out)["lora"]["r"] == 128


def test_copy_then_train_config_loads_with_an_override(tmp_path, capsys):
    dest = tmp_path / "sub" / "my.yaml"
    assert main(["configs", "copy", "llava-1.5/7b_lora", str(dest)]) == 0
    assert dest.read_text() == configs.read_text("llava-1.5/7b_lora")
    cfg = load_config(dest, ["train.lr=1.0e-4", "data.path=mine.json"])
    assert (cfg.train.lr, cfg.data.path, cfg.lora.r) == (1e-4, "mine.json", 128)
    assert not [p for p in dest.parent.iterdir() if p.name != "my.yaml"]  # no temp file left behind


def test_copy_into_a_folder_uses_the_config_name(tmp_path, capsys):
    assert main(["configs", "copy", "minicpm-v/lora", str(tmp_path)]) == 0
    assert (tmp_path / "lora.yaml").read_text() == configs.read_text("minicpm-v/lora")


def test_copy_refuses_to_overwrite_without_force(tmp_path, capsys):
    dest = tmp_path / "my.yaml"
    dest.write_text("mine\n")
    assert main(["configs", "copy", "demo/tiny_lora", str(dest)]) == 2
    assert "--force" in capsys.readouterr().err
    assert dest.read_text() == "mine\n"
    assert main(["configs", "copy", "demo/tiny_lora", str(dest), "--force"]) == 0
    assert dest.read_text() == configs.read_text("demo/tiny_lora")


@pytest.mark.parametrize("argv", [["show", "llava/7b_lora"], ["copy", "llava-1.5/7b-lora", "x.yaml"]])
def test_unknown_name_exits_2_with_close_matches(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["configs", *argv]) == 2
    err = capsys.readouterr().err
    assert "llava-1.5/7b_lora" in err and "Traceback" not in err
    assert not (tmp_path / "x.yaml").exists()


def test_no_action_prints_help_and_exits_2(capsys):
    assert main(["configs"]) == 2
    assert "list" in capsys.readouterr().err


def test_minicpm_v_regex_hits_only_the_llm_attention_of_a_llava_hf_model(tmp_path):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from vlmtune.models.adapters import lora_targets
    from vlmtune.models.registry import get_family

    tiny = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=28, patch_size=14),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                vocab_size=128))
    model = LlavaForConditionalGeneration(tiny)
    path = tmp_path / "c.yaml"
    path.write_text(configs.read_text("minicpm-v/lora"))
    names = lora_targets(model, get_family("llava"), load_config(path))
    assert len(names) == 2 * 3
    assert all(n.startswith("model.language_model.layers.") and n.split(".")[-1] in ("q_proj", "k_proj", "v_proj")
               for n in names)


def test_deepspeed_launcher_local_rank_argument_is_accepted(capsys):
    """`deepspeed vlmtune ...` passes --local_rank=N first; the rank comes from the environment instead."""
    assert main(["--local_rank=0", "configs", "list"]) == 0
    assert main(["--local_rank", "1", "configs", "list"]) == 0
    assert "llava-1.5/7b_lora" in capsys.readouterr().out
