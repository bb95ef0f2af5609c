"""The shared generation engine: loading models/runs/adapters, batched and streaming generation."""

from __future__ import annotations

import pytest
import torch

from vlmtune.data.sample import Message
from vlmtune.errors import ModelLoadError
from vlmtune.inference import ChatModel, PromptError, load_chat_model


def test_generate_batched_matches_single(tiny_vlm, probe_image):
    chat = load_chat_model(str(tiny_vlm))
    convs = [[Message("user", "What digit is shown in the image?")], [Message("user", "<image>\nDescribe the image. Please explain.")]]
    imgs = [[probe_image], [probe_image.rotate(90)]]
    batched = chat.generate(convs, imgs, max_new_tokens=6)
    singles = [chat.generate([c], [i], max_new_tokens=6)[0] for c, i in zip(convs, imgs)]
    assert batched == singles
    assert all(isinstance(t, str) for t in batched)


def test_prompt_gets_image_placeholder_and_template(tiny_vlm, probe_image):
    chat = load_chat_model(str(tiny_vlm))
    assert chat.template_name == "model"  # the processor's own chat template
    text = chat.render([Message("user", "Hi")], [probe_image])
    assert text.endswith("USER: <image>\nHi ASSISTANT:")
    named = load_chat_model(str(tiny_vlm), template="vicuna_v1")
    assert named.render([Message("user", "Hi")], [probe_image]) == text
    with pytest.raises(PromptError):
        chat.render([Message("user", "<image><image> two?")], [probe_image])
    # 16 image tokens expanded
    assert chat.count_tokens([Message("user", "Hi")], [probe_image]) - chat.count_tokens([Message("user", "Hi")], []) == 16 + 1


def test_stream_equals_generate(tiny_vlm, probe_image):
    chat = load_chat_model(str(tiny_vlm))
    msgs = [Message("user", "Which digit is this?")]
    pieces = list(chat.stream(msgs, [probe_image], max_new_tokens=8))
    assert "".join(pieces).strip() == chat.generate([msgs], [[probe_image]], max_new_tokens=8)[0]


def test_completion_usage_and_stop(tiny_vlm, probe_image):
    chat = load_chat_model(str(tiny_vlm))
    msgs = [Message("user", "Which digit is this?")]
    full = chat.complete([msgs], [[probe_image]], max_new_tokens=8)[0]
    assert full.prompt_tokens == chat.count_tokens(msgs, [probe_image])
    assert 1 <= full.completion_tokens <= 8 and full.finish_reason in ("stop", "length")
    if len(full.text) > 2:
        stop = full.text[1:3]
        cut = chat.generate([msgs], [[probe_image]], max_new_tokens=8, stop=[stop])[0]
        assert stop not in cut and full.text.startswith(cut)


def test_run_folder_applies_adapter_unmerged(lora_run, tiny_vlm, probe_image):
    chat = load_chat_model(str(lora_run))
    from peft import PeftModel

    assert isinstance(chat.model, PeftModel)
    base = load_chat_model(str(tiny_vlm))
    msgs = [Message("user", "What is this?")]
    enc = base.encode([msgs], [[probe_image]])
    with torch.no_grad():
        a = base.model(**enc).logits
        b = chat.model(**enc).logits
    assert (a - b).abs().max() > 1e-3  # the adapter (LoRA + projector) changes the model
    # the same adapter given explicitly with --adapter
    chat2 = load_chat_model(str(tiny_vlm), adapter=str(lora_run / "final"))
    with torch.no_grad():
        c = chat2.model(**enc).logits
    assert torch.allclose(b, c)


def test_in_memory_chat_model(tiny_vlm, probe_image):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    chat = ChatModel(model, AutoProcessor.from_pretrained(tiny_vlm), "vicuna_v1")
    assert len(chat.generate([[Message("user", "Hi")]], [[probe_image]], max_new_tokens=3)) == 1


def test_text_only_llm(tiny_vlm):
    llm = tiny_vlm.parent / (tiny_vlm.name + "-parts") / "tiny-llama"
    chat = load_chat_model(str(llm), template="vicuna_v1")
    assert not chat.is_vlm
    out = chat.generate([[Message("user", "Hello!")]], max_new_tokens=4)
    assert isinstance(out[0], str)
    with pytest.raises(PromptError):
        chat.render([Message("user", "Hi")], [object()])


def test_not_a_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_chat_model(str(tmp_path))
