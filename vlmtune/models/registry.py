"""Per-family facts, keyed on the HF `config.model_type` (never on folder names).

A family says where the vision tower, projector and language model live inside the HF module
tree, which template it chats with by default, and whether it is a VLM or a text-only LLM.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmtune.errors import ModelLoadError


@dataclass(frozen=True)
class Family:
    model_type: str
    kind: str  # "vlm" or "llm"
    default_template: str
    vision: tuple[str, ...] = ()  # module name prefixes of the vision tower
    projector: tuple[str, ...] = ()  # ... of the projector
    llm: tuple[str, ...] = ("",)  # ... of the language model (with its lm_head)
    no_lora: tuple[str, ...] = ("lm_head",)  # never LoRA'd even inside a LoRA'd part (LLaVA leaves lm_head out)

    def component_of(self, module_name: str) -> str | None:
        """'vision', 'projector' or 'llm' for a module's dotted name (longest prefix wins)."""
        best, best_len = None, -1
        for comp in ("vision", "projector", "llm"):
            for prefix in getattr(self, comp):
                hit = prefix == "" or module_name == prefix or module_name.startswith(prefix + ".")
                if hit and len(prefix) > best_len:
                    best, best_len = comp, len(prefix)
        return best


_LLAVA_LIKE = dict(kind="vlm", vision=("model.vision_tower",), projector=("model.multi_modal_projector",),
                   llm=("model.language_model", "lm_head"))

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in [
        Family("llava", default_template="vicuna_v1", **_LLAVA_LIKE),
        Family("llava_next", default_template="vicuna_v1", **_LLAVA_LIKE),
        Family("llava_onevision", default_template="model", **_LLAVA_LIKE),
        Family("qwen2_vl", kind="vlm", default_template="model", vision=("model.visual",), projector=("model.visual.merger",),
               llm=("model.language_model", "lm_head")),
        Family("qwen2_5_vl", kind="vlm", default_template="model", vision=("model.visual",), projector=("model.visual.merger",),
               llm=("model.language_model", "lm_head")),
        Family("idefics3", kind="vlm", default_template="model", vision=("model.vision_model",), projector=("model.connector",),
               llm=("model.text_model", "lm_head")),
        Family("gemma3", kind="vlm", default_template="model", vision=("model.vision_tower",),
               projector=("model.multi_modal_projector",), llm=("model.language_model", "lm_head")),
        # Text-only LLMs: the whole model is the "llm" part.
        *[Family(t, kind="llm", default_template=tpl) for t, tpl in [
            ("llama", "model"), ("mistral", "model"), ("qwen2", "chatml"), ("qwen3", "chatml"), ("internlm2", "internlm2_chat"),
            ("gemma", "model"), ("gemma2", "model"), ("phi3", "model"), ("gpt2", "raw"), ("gpt_neox", "raw"), ("smollm3", "model"),
        ]],
    ]
}


def get_family(model_type: str) -> Family:
    try:
        return FAMILIES[model_type]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ModelLoadError(f"model_type `{model_type}` is not supported by vlmtune yet. Known families: {known}.") from None


def register_family(family: Family) -> None:
    """Add a family at run time (for a model type vlmtune does not ship)."""
    FAMILIES[family.model_type] = family
