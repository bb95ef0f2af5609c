"""Every error message names the field and the fix, exits 2 through the CLI, and shows no traceback."""

from __future__ import annotations

import pytest

from training_helpers import train_cli, vlm_config, write_yaml


@pytest.fixture
def cfg_path(tiny_vlm, digits, tmp_path):
    return write_yaml(tmp_path / "cfg.yaml", vlm_config(tiny_vlm, digits, tmp_path / "run"))


def _fails(capsys, config, *overrides) -> str:
    assert train_cli(config, *overrides) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("vlmtune: error:")
    return err


def test_unknown_key_suggests_nearest(cfg_path, capsys):
    assert "Did you mean `train.lr`?" in _fails(capsys, cfg_path, "train.lrr=1")
    assert "Did you mean `lora.alpha`?" in _fails(capsys, cfg_path, "lora.alpah=8")
    assert "Did you mean `train.warmup_ratio`?" in _fails(capsys, cfg_path, "model.warmup_ratio=0.1")  # wrong section


def test_unknown_key_in_yaml(tiny_vlm, digits, tmp_path, capsys):
    cfg = vlm_config(tiny_vlm, digits, tmp_path / "run")
    cfg["train"]["batchsize"] = 2
    assert "Did you mean `train.batch_size`?" in _fails(capsys, write_yaml(tmp_path / "c.yaml", cfg))


def test_qlora_with_full_llm_fails_before_weights_load(cfg_path, capsys, monkeypatch):
    import vlmtune.models.load as load

    def no_loading(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(load, "load_model_for_training", no_loading)
    err = _fails(capsys, cfg_path, "model.quantization=4bit", "model.llm=full")
    assert "model.llm: lora" in err and "model.quantization" in err


def test_missing_data_path(cfg_path, capsys):
    assert "data.path" in _fails(capsys, cfg_path, "data.path=null")
    assert "does-not-exist.json" in _fails(capsys, cfg_path, "data.path=does-not-exist.json")


@pytest.mark.parametrize("override, field", [
    ("model.vision=half", "model.vision"), ("model.llm=qlora", "model.llm"), ("model.quantization=2bit", "model.quantization"),
    ("train.precision=fp8", "train.precision"), ("lora.bias=some", "lora.bias"), ("data.overlong=cut", "data.overlong"),
    ("train.report_to=mlflow", "train.report_to"), ("model.projector_type=mlp3x", "model.projector_type"),
    ("data.template=vicuna", "data.template"), ("train.lr=fast", "train.lr"),
])
def test_bad_values_name_the_field(cfg_path, capsys, override, field, monkeypatch):
    import vlmtune.models.load as load

    monkeypatch.setattr(load, "load_model_for_training", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert field in _fails(capsys, cfg_path, override)


def test_missing_config_file_and_no_model(tmp_path, capsys):
    assert "does not exist" in _fails(capsys, tmp_path / "nope.yaml")
    assert "model.path" in _fails(capsys, write_yaml(tmp_path / "empty.yaml", {"data": {"path": "x.json"}}))
