"""`vlmtune convert llava-original`: a tiny checkpoint written in LLaVA's original layout becomes an HF llava
that computes exactly what the same parts composed by vlmtune compute."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from vlmtune.cli import main


@pytest.fixture(scope="module")
def original(tiny_vlm, tmp_path_factory) -> dict:
    """A LLaVA-original folder from the tiny parts: Llama weights + model.mm_projector.{0,2}.* as a .bin pickle."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    parts = tiny_vlm.parent / (tiny_vlm.name + "-parts")
    llm = LlamaForCausalLM.from_pretrained(parts / "tiny-llama")
    src = tmp_path_factory.mktemp("orig") / "llava-v1.5-tiny"
    src.mkdir()
    g = torch.Generator().manual_seed(3)
    proj = {"model.mm_projector.0.weight": torch.randn(64, 64, generator=g) * 0.1, "model.mm_projector.0.bias": torch.randn(64, generator=g) * 0.1,
            "model.mm_projector.2.weight": torch.randn(64, 64, generator=g) * 0.1, "model.mm_projector.2.bias": torch.randn(64, generator=g) * 0.1}
    state = {**{k: v.clone() for k, v in llm.state_dict().items()}, **proj}
    torch.save(state, src / "pytorch_model.bin")
    cfg = llm.config.to_dict()
    cfg.update(architectures=["LlavaLlamaForCausalLM"], model_type="llava", mm_vision_tower="openai/clip-vit-large-patch14-336",
               mm_hidden_size=64, mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
               image_aspect_ratio="pad", mm_use_im_start_end=False, mm_use_im_patch_token=False)
    (src / "config.json").write_text(json.dumps(cfg))
    AutoTokenizer.from_pretrained(parts / "tiny-llama").save_pretrained(src)
    stage1 = src.parent / "stage1"
    stage1.mkdir()
    torch.save(proj, stage1 / "mm_projector.bin")
    return {"src": src, "stage1": stage1 / "mm_projector.bin", "vision": parts / "tiny-clip", "llm": parts / "tiny-llama", "proj": proj}


def _reference(original):
    """The same parts composed by vlmtune, with the projector copied in by hand."""
    from vlmtune.models.compose import compose_llava

    model, processor = compose_llava(str(original["vision"]), str(original["llm"]))
    p = model.model.multi_modal_projector
    with torch.no_grad():
        p.linear_1.weight.copy_(original["proj"]["model.mm_projector.0.weight"])
        p.linear_1.bias.copy_(original["proj"]["model.mm_projector.0.bias"])
        p.linear_2.weight.copy_(original["proj"]["model.mm_projector.2.weight"])
        p.linear_2.bias.copy_(original["proj"]["model.mm_projector.2.bias"])
    return model, processor


def _logits(model, processor, image):
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}],
                                         add_generation_prompt=True)
    enc = processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_convert_full_checkpoint(original, tmp_path, probe_image):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "hf"
    assert main(["convert", "llava-original", str(original["src"]), str(out), "--vision-tower", str(original["vision"])]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["vision_feature_layer"] == -2 and cfg["image_aspect_ratio"] == "pad"
    assert (out / "chat_template.jinja").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    ref_model, ref_proc = _reference(original)
    torch.testing.assert_close(_logits(model, processor, probe_image), _logits(ref_model, ref_proc, probe_image))


def test_convert_needs_vision_tower_offline(original, tmp_path, capsys):
    assert main(["convert", "llava-original", str(original["src"]), str(tmp_path / "o")]) == 2
    assert "--vision-tower" in capsys.readouterr().err


def test_stage1_projector(original, tmp_path, probe_image):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmtune.models.compose import projector_state_from

    proj_dir = tmp_path / "proj"
    assert main(["convert", "llava-original", str(original["stage1"]), str(proj_dir)]) == 0
    state = projector_state_from(str(proj_dir))
    torch.testing.assert_close(state["linear_2.weight"], original["proj"]["model.mm_projector.2.weight"])

    full = tmp_path / "full"
    assert main(["convert", "llava-original", str(original["stage1"]), str(full), "--vision-tower", str(original["vision"]),
                 "--language-model", str(original["llm"])]) == 0
    model = AutoModelForImageTextToText.from_pretrained(full)
    ref_model, ref_proc = _reference(original)
    torch.testing.assert_close(_logits(model, AutoProcessor.from_pretrained(full), probe_image), _logits(ref_model, ref_proc, probe_image))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    bad = tmp_path / "mm_projector.bin"
    with open(bad, "wb") as f:
        pickle.dump({"model.mm_projector.0.weight": _Evil()}, f)
    assert main(["convert", "llava-original", str(bad), str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert "weights_only" in captured.err and "pwned" not in captured.out
