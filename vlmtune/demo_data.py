"""The demo's data: scikit-learn's bundled handwritten digits (8x8), upscaled to RGB PNGs, as LLaVA-format JSON.

Two tasks on the same images:
- `identify` ("What digit is shown in the image?" -> "The digit is seven."): what the base model is taught,
  mixed with text-only records ("Which digit comes after seven?" -> "The next digit is eight.") so that,
  like a real LLM, the base knows the words and the successor of each digit;
- `next` ("Which digit comes after this one?" + an image -> "The next digit is eight."): the new visual
  instruction the LoRA fine-tune teaches, which the base never saw. Its answer depends on the image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vlmtune.models.tiny import DIGIT_WORDS

QUESTIONS = {
    "identify": "What digit is shown in the image?",
    "next": "Which digit comes after this one?",
}


def answer_for(task: str, digit: int) -> str:
    if task == "identify":
        return f"The digit is {DIGIT_WORDS[digit]}."
    return f"The next digit is {DIGIT_WORDS[(digit + 1) % 10]}."


def expected_word(task: str, digit: int) -> str:
    return DIGIT_WORDS[digit if task == "identify" else (digit + 1) % 10]


def parse_digit_word(text: str) -> str | None:
    """The first digit word in an answer (None if there is none)."""
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in DIGIT_WORDS:
            return word
    return None


def write_digit_images(folder: Path, size: int = 32) -> list[tuple[str, int]]:
    """Save every digit as `folder/digit_XXXX.png`; returns (file name, label) in dataset order."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        name = f"digit_{i:04d}.png"
        path = folder / name
        if not path.exists():
            gray = (img / 16.0 * 255).astype(np.uint8)
            Image.fromarray(gray, mode="L").resize((size, size), Image.BILINEAR).convert("RGB").save(path)
        out.append((name, int(label)))
    return out


def build_digit_data(root: Path, *, eval_fraction: float = 0.2, seed: int = 0, text_repeats: int = 30) -> dict[str, Path]:
    """Images + train/eval JSON for both tasks. Held-out eval images are never trained on in either stage."""
    root = Path(root)
    items = write_digit_images(root / "images")
    order = np.random.default_rng(seed).permutation(len(items))
    n_eval = int(len(items) * eval_fraction)
    splits = {"eval": [items[i] for i in order[:n_eval]], "train": [items[i] for i in order[n_eval:]]}
    paths = {}
    for task in QUESTIONS:
        for split, rows in splits.items():
            records = [{"id": f"{task}-{split}-{k}", "image": name,
                        "conversations": [{"from": "human", "value": f"<image>\n{QUESTIONS[task]}"},
                                          {"from": "gpt", "value": answer_for(task, label)}],
                        "label": label}
                       for k, (name, label) in enumerate(rows)]
            path = root / f"{task}_{split}.json"
            path.write_text(json.dumps(records, indent=0))
            paths[f"{task}_{split}"] = path
    # Text-only successor facts, mixed into the base's training file (as a chat LLM would know them).
    base = json.loads(paths["identify_train"].read_text())
    facts = [{"id": f"text-{rep}-{d}",
              "conversations": [{"from": "human", "value": f"Which digit comes after {DIGIT_WORDS[d]}?"},
                                {"from": "gpt", "value": answer_for("next", d)}]}
             for rep in range(text_repeats) for d in range(10)]
    paths["identify_train"].write_text(json.dumps(base + facts, indent=0))
    paths["images"] = root / "images"
    return paths
