"""What trains: every trainable parameter changes and every frozen one does not, for each of
frozen / lora / full on the vision tower, the projector and the LLM; stage 1 -> stage 2 on a composed
model; separate learning rates and no weight decay on 1-D parameters."""

from __future__ import annotations

import pytest
import torch

from training_helpers import UNUSED_VISION, base_state, load_adapter, train_cli, vlm_config, write_yaml

# Three LoRA runs cover each mode on each component once; a fourth has no LoRA (a full HF model comes out).
CASES = {
    "vision-lora_projector-full_llm-frozen": dict(vision="lora", projector="full", llm="frozen"),
    "vision-full_projector-frozen_llm-lora": dict(vision="full", projector="frozen", llm="lora"),
    "vision-frozen_projector-lora_llm-full": dict(vision="frozen", projector="lora", llm="full"),
    "vision-frozen_projector-full_llm-full": dict(vision="frozen", projector="full", llm="full"),
}


def _component(name: str) -> str:
    from vlmtune.models.registry import get_family

    return get_family("llava").component_of(name) or "llm"


def _peft_base_name(name: str) -> str:
    """`base_model.model.X.lora_B.default.weight` -> `X.weight` etc. (the name in the plain model)."""
    name = name.removeprefix("base_model.model.")
    for part in (".base_layer", ".modules_to_save.default", ".original_module", ".lora_A.default", ".lora_B.default"):
        name = name.replace(part, "")
    return name


def _unused(name: str) -> bool:
    return name.startswith(UNUSED_VISION)


@pytest.fixture(scope="session")
def case_runs(tiny_vlm, digits, tmp_path_factory):
    """Train each case once (2 steps) and share the run folders."""
    cache = {}

    def get(case: str):
        if case not in cache:
            run = tmp_path_factory.mktemp("cases") / case
            cfg = write_yaml(run.parent / f"{case}.yaml", vlm_config(tiny_vlm, digits, run, **CASES[case]))
            assert train_cli(cfg) == 0
            cache[case] = run
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_trainable_change_frozen_stay(case, case_runs, tiny_vlm):
    modes = CASES[case]
    final = case_runs(case) / "final"
    base = base_state(tiny_vlm)
    if (final / "adapter_config.json").is_file():
        model = load_adapter(tiny_vlm, final)
        seen = {"lora": set(), "full": set()}
        for name, p in model.named_parameters():
            plain = _peft_base_name(name)
            comp = _component(plain)
            if ".lora_A." in name:
                assert modes[comp] == "lora", name
            elif ".lora_B." in name:
                assert modes[comp] == "lora", name
                seen["lora"].add(comp)
                if not _unused(plain):
                    assert p.abs().max() > 0, f"{name}: LoRA B still zero after 2 steps"
            elif ".modules_to_save." in name:
                assert modes[comp] == "full", name
                seen["full"].add(comp)
                if not _unused(plain):
                    assert not torch.equal(p, base[plain]), f"{name}: fully trained but unchanged"
            else:  # a base weight, or the original copy of a modules_to_save module
                assert torch.equal(p, base[plain]), f"{name}: frozen but changed"
        assert seen["lora"] == {c for c, m in modes.items() if m == "lora"}
        assert seen["full"] == {c for c, m in modes.items() if m == "full"}
    else:
        assert "lora" not in modes.values()
        from transformers import AutoModelForImageTextToText

        trained = AutoModelForImageTextToText.from_pretrained(final).state_dict()
        assert trained.keys() == base.keys()
        for name, w in trained.items():
            if modes[_component(name)] == "full" and not _unused(name):
                assert not torch.equal(w, base[name]), f"{name}: fully trained but unchanged"
            elif modes[_component(name)] == "frozen":
                assert torch.equal(w, base[name]), f"{name}: frozen but changed"


def test_stage1_projector_then_stage2_projector_from(tiny_parts, digits, tmp_path):
    from safetensors.torch import load_file

    def projector(folder):
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update({k: v for k, v in load_file(str(f)).items() if "multi_modal_projector." in k})
        return out

    composed = {"vision_encoder": str(tiny_parts["vision"]), "language_model": str(tiny_parts["llm"])}
    s1 = tmp_path / "stage1"
    cfg = vlm_config(None, digits, s1, vision="frozen", projector="full", llm="frozen")
    cfg["model"] = {**composed, "vision": "frozen", "projector": "full", "llm": "frozen"}
    cfg["data"]["template"] = "plain"
    assert train_cli(write_yaml(tmp_path / "s1.yaml", cfg)) == 0
    init, trained = projector(s1 / "base"), projector(s1 / "final")
    assert init and init.keys() == trained.keys()
    assert all(not torch.equal(init[k], trained[k]) for k in init)
    # Only the projector trained: everything else in stage 1's final equals the composed base.
    b1, f1 = load_file(str(s1 / "base" / "model.safetensors")), load_file(str(s1 / "final" / "model.safetensors"))
    assert all(torch.equal(b1[k], f1[k]) for k in b1 if "multi_modal_projector." not in k)

    s2 = tmp_path / "stage2"
    cfg2 = vlm_config(None, digits, s2)
    cfg2["model"] = {**composed, "projector_from": str(s1 / "final"), "vision": "frozen", "projector": "frozen", "llm": "lora"}
    assert train_cli(write_yaml(tmp_path / "s2.yaml", cfg2)) == 0
    loaded = projector(s2 / "base")  # the frozen base of stage 2, as saved by the run
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_param_groups_separate_lrs_and_no_decay_on_1d(tiny_vlm):
    from transformers import AutoModelForImageTextToText

    from vlmtune.config import load_config
    from vlmtune.models.adapters import apply_training_modes, param_groups
    from vlmtune.models.registry import get_family

    cfg = load_config(None, [f"model.path={tiny_vlm}", "model.vision=lora", "model.projector=full", "model.llm=lora",
                             "train.lr=1e-4", "train.projector_lr=2e-3", "train.vision_lr=3e-5", "train.weight_decay=0.1"])
    family = get_family("llava")
    model = apply_training_modes(AutoModelForImageTextToText.from_pretrained(tiny_vlm), family, cfg)
    groups = param_groups(model, family, cfg)
    want = {"llm": 1e-4, "projector": 2e-3, "vision": 3e-5}
    grouped = set()
    for g in groups:
        assert g["lr"] == want[g["component"]]
        for name, p in zip(g["names"], g["params"]):
            assert _component(_peft_base_name(name)) == g["component"], name
            assert g["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0), name
            grouped.add(name)
    assert {g["component"] for g in groups} == set(want)
    assert any(g["weight_decay"] == 0.0 for g in groups if g["component"] == "projector")  # its biases
    assert grouped == {n for n, p in model.named_parameters() if p.requires_grad}
    # and AdamW takes them as they are
    opt = torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.1)
    assert sorted({pg["lr"] for pg in opt.param_groups}) == sorted(want.values())
