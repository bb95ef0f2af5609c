"""Tiny, real Hugging Face model folders built offline, for the demo and the tests.

Nothing here is a mock: each folder is an ordinary HF checkpoint (safetensors + config +
tokenizer/processor files) that stock transformers loads. The tokenizer is a byte-level BPE
trained locally with `tokenizers`.

    tok = train_tiny_tokenizer()                     # PreTrainedTokenizerFast
    parts = build_tiny_parts(tmp / "parts")          # {"vision": folder, "llm": folder}
    vlm = build_tiny_llava(tmp / "vlm")              # a composed LlavaForConditionalGeneration folder
"""

from __future__ import annotations

from pathlib import Path

import torch

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Chat-template and tutorial words so that the BPE learns useful merges; byte-level fallback covers the rest.
_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: ASSISTANT: SYSTEM: user assistant system",
    "What digit is shown in the image? Which digit is this? What number do you see?",
    "Is the digit even or odd? The digit is even. The digit is odd. Answer with one word.",
    "Answer with the option's letter from the given choices directly. A B C D E",
    "Hint: Question: Options: Describe the image. What is in the picture? Who is in the picture?",
    "The image shows a handwritten digit. It is a photo of a cat, a coin, a rocket, an astronaut.",
    "Hello! How can I help you today? Yes. No. Thanks. Please explain.",
    " ".join(DIGIT_WORDS),
    "0 1 2 3 4 5 6 7 8 9 10 100 the a an is are was of to in on and or with for",
]

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>",
                  "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def train_tiny_tokenizer(extra_texts: list[str] = (), vocab_size: int = 512):
    """A byte-level BPE (Llama-like: adds <s>, ends turns with </s>) as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(_CORPUS) * 20 + list(extra_texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[4:]})
    fast.padding_side = "right"
    return fast


def build_tiny_parts(out: str | Path, *, image_size: int = 32, patch_size: int = 8, hidden: int = 64,
                     vision_hidden: int | None = None, vision_layers: int = 2, seed: int = 0) -> dict[str, Path]:
    """Write a tiny CLIP vision encoder folder and a tiny Llama causal-LM folder (separate checkpoints)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    torch.manual_seed(seed)
    vh = vision_hidden or hidden
    vcfg = CLIPVisionConfig(hidden_size=vh, intermediate_size=vh * 2, num_hidden_layers=vision_layers,
                            num_attention_heads=4, image_size=image_size, patch_size=patch_size, projection_dim=vh)
    vision = CLIPVisionModel(vcfg)
    vdir = out / "tiny-clip"
    vision.save_pretrained(vdir)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(vdir)

    tokenizer = train_tiny_tokenizer()
    lcfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    llm = LlamaForCausalLM(lcfg)
    ldir = out / "tiny-llama"
    llm.save_pretrained(ldir)
    tokenizer.save_pretrained(ldir)
    return {"vision": vdir, "llm": ldir}


def build_tiny_llava(out: str | Path, *, template: str = "vicuna_v1", seed: int = 0, **part_kw) -> Path:
    """Compose a tiny LLaVA from tiny parts (through the real compose path) and save it as an HF folder."""
    from vlmtune.models.compose import compose_llava

    out = Path(out)
    parts = build_tiny_parts(out.parent / (out.name + "-parts"), seed=seed, **part_kw)
    model, processor = compose_llava(str(parts["vision"]), str(parts["llm"]), template=template)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
