"""Evaluation during training: a benchmark slice and sample answers, logged per step."""

import json

import pytest

from vlmtune.config import EvalConfig
from vlmtune.errors import ConfigError
from vlmtune.evaluation.during_training import check_eval_config, evaluate_during_training
from vlmtune.inference import load_chat_model


def test_benchmark_slice_and_samples(tmp_path, tiny_vlm, make_mmbench, digit_questions, digit_folder):
    tsv = make_mmbench(tmp_path / "MMBench_DEV_EN.tsv", digit_questions(4))
    cfg = EvalConfig(benchmark="mmbench", data=str(tsv), every_steps=10, limit=2, max_new_tokens=3, batch_size=4,
                     image_folder=str(digit_folder),
                     samples=[{"image": "d3.png", "question": "What digit is shown in the image?"},
                              {"question": "Say hello."}])
    check_eval_config(cfg)
    chat = load_chat_model(str(tiny_vlm))
    chat.model.train()
    logs = evaluate_during_training(chat, cfg, 10, tmp_path / "run")
    assert chat.model.training  # given back in training mode
    assert set(logs) == {"eval/mmbench_accuracy", "eval/mmbench_plain_accuracy", "eval/mmbench_unparseable", "eval/samples"}
    assert all(isinstance(v, float) for k, v in logs.items() if k != "eval/samples")
    assert [s["question"] for s in logs["eval/samples"]] == ["What digit is shown in the image?", "Say hello."]
    assert all(s["step"] == 10 and isinstance(s["answer"], str) for s in logs["eval/samples"])
    m = json.loads((tmp_path / "run" / "eval" / "step-10" / "metrics.json").read_text())
    assert m["questions"] == 2 and m["rows"] == 6
    evaluate_during_training(chat, EvalConfig(samples=cfg.samples, image_folder=str(digit_folder), max_new_tokens=3),
                             20, tmp_path / "run")
    lines = (tmp_path / "run" / "eval_samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [10, 10, 20, 20]


def test_bad_config(tmp_path, digit_folder):
    with pytest.raises(ConfigError, match=r"`eval.samples\[0\].image`: nope.png not found"):
        check_eval_config(EvalConfig(samples=[{"image": "nope.png", "question": "q"}], image_folder=str(digit_folder)))
    with pytest.raises(ConfigError, match=r"`eval.samples\[1\]` must be"):
        check_eval_config(EvalConfig(samples=[{"question": "q"}, {"image": "d0.png"}]))
    with pytest.raises(ConfigError, match="`eval.data`: .* does not exist"):
        check_eval_config(EvalConfig(benchmark="vqa", data=str(tmp_path / "none.jsonl")))
