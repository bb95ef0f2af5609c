"""Benchmark-format fixtures built in tmp_path from scikit-learn's bundled digits, and the tiny model.

`make_mmbench(path, rows)` writes an MMBench TSV (base64 PNG digits in `image`);
`digit_png(i)` gives the PNG bytes of digit image i; `tiny_vlm` is a real tiny LLaVA folder.
"""

from __future__ import annotations

import base64
import json
import csv
import io
from pathlib import Path

import pytest

MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]


@pytest.fixture(scope="session")
def digit_png():
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images
    cache: dict[int, bytes] = {}

    def png(i: int) -> bytes:
        if i not in cache:
            gray = (images[i] / 16.0 * 255).astype("uint8")
            buf = io.BytesIO()
            Image.fromarray(gray, mode="L").resize((32, 32)).convert("RGB").save(buf, format="PNG")
            cache[i] = buf.getvalue()
        return cache[i]

    return png


@pytest.fixture(scope="session")
def make_mmbench(digit_png):
    def make(path: Path, rows: list[dict], columns: list[str] = MMBENCH_COLUMNS) -> Path:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(columns)
            for n, row in enumerate(rows):
                row = dict(row)
                if "image" not in row:
                    row["image"] = base64.b64encode(digit_png(n)).decode()
                w.writerow([row.get(c, "") for c in columns])
        return path

    return make


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory, digit_png) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    for i in range(12):
        (folder / f"d{i}.png").write_bytes(digit_png(i))
    return folder


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    from vlmtune.models.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


INSTR = "Answer with the option's letter from the given choices directly."


@pytest.fixture(scope="session")
def digit_questions():
    """n MMBench rows "Which digit is shown?" with three options, the right one always A (no rotations)."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

    def rows(n: int) -> list[dict]:
        return [{"index": i, "question": "Which digit is shown?", "hint": "A handwritten digit." if i % 2 else "",
                 "A": words[i], "B": words[(i + 1) % 10], "C": words[(i + 2) % 10], "answer": "A",
                 "category": "digits", "l2-category": "perception"} for i in range(n)]

    return rows


@pytest.fixture(scope="session")
def make_sqa(digit_png):
    """A ScienceQA folder: LLaVA's question file, problems.json, pid_splits.json, images/<pid>/image.png."""

    def make(folder):
        (folder / "images" / "11").mkdir(parents=True)
        (folder / "images" / "11" / "image.png").write_bytes(digit_png(3))
        (folder / "images" / "12").mkdir(parents=True)
        (folder / "images" / "12" / "image.png").write_bytes(digit_png(4))
        problems = {
            "11": {"question": "Which digit is shown?", "choices": ["two", "three"], "answer": 1, "image": "image.png", "split": "test"},
            "12": {"question": "Is it even?", "choices": ["yes", "no", "maybe"], "answer": 0, "image": "image.png", "split": "test"},
            "13": {"question": "Which is a mammal?", "choices": ["cat", "trout"], "answer": 0, "image": None, "split": "test"},
            "14": {"question": "Which is a bird?", "choices": ["robin", "bat"], "answer": 0, "image": None, "split": "test"},
            "99": {"question": "Train only", "choices": ["a", "b"], "answer": 0, "image": None, "split": "train"},
        }
        questions = [
            {"id": "11", "image": "11/image.png", "conversations": [
                {"from": "human", "value": f"<image>\nContext: A digit.\nWhich digit is shown?\nA. two\nB. three\n{INSTR}"},
                {"from": "gpt", "value": "B"}]},
            {"id": "12", "image": "12/image.png", "conversations": [
                {"from": "human", "value": "Is it even?\nA. yes\nB. no\nC. maybe\n<image>"}, {"from": "gpt", "value": "A"}]},
            {"id": "13", "conversations": [{"from": "human", "value": f"Which is a mammal?\nA. cat\nB. trout\n{INSTR}"}]},
            {"id": "14", "conversations": [{"from": "human", "value": f"Which is a bird?\nA. robin\nB. bat\n{INSTR}"}]},
            {"id": "99", "conversations": [{"from": "human", "value": "Train only\nA. a\nB. b"}]},
        ]
        (folder / "problems.json").write_text(json.dumps(problems))
        (folder / "pid_splits.json").write_text(json.dumps({"test": ["11", "12", "13", "14"], "train": ["99"]}))
        (folder / "llava_test_CQM-A.json").write_text(json.dumps(questions))
        return folder

    return make
