"""Benchmark-format fixtures built in tmp_path from scikit-learn's bundled digits, and the tiny model.

`make_mmbench(path, rows)` writes an MMBench TSV (base64 PNG digits in `image`);
`digit_png(i)` gives the PNG bytes of digit image i; `tiny_vlm` is a real tiny LLaVA folder.
"""

from __future__ import annotations

import base64
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
