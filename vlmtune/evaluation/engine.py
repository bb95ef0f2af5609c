"""The generation engine every benchmark shares: batched, greedy by default, resumable.

    done, todo = split_done(items, "out/predictions.jsonl", benchmark="mmbench", model="merged/")
    check_images(todo)                                   # bad images fail before the model loads
    answers = generate_predictions(chat, todo, "out/predictions.jsonl", benchmark="mmbench", model="merged/")

Each batch's answers are appended to the predictions file (and fsynced) as soon as they are made;
started again on the same file, a run skips every question already answered there.
"""

from __future__ import annotations

import io
import sys

from vlmtune.data.sample import Message
from vlmtune.errors import DataError
from vlmtune.evaluation.items import EvalItem
from vlmtune.evaluation.predictions import append_predictions, read_own_predictions


def split_done(items: list[EvalItem], predictions_file: str, *, benchmark: str,
               model: str | None = None) -> tuple[dict[str, str], list[EvalItem]]:
    """({id: answer} already in the file, the items still to answer, in order)."""
    records = read_own_predictions(predictions_file, benchmark=benchmark, items=items, model=model)
    done = {i: str(r.get("prediction") or "") for i, r in records.items()}
    return done, [item for item in items if item.id not in done]


def check_images(items: list[EvalItem]) -> None:
    """Decode every base64 cell and identify every image's format: cheap, and before any weights load."""
    from PIL import Image, UnidentifiedImageError

    for item in items:
        for ref in item.images:
            data = ref.data()  # DataError for undecodable base64
            try:
                with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
                    img.size  # noqa: B018 (the header is read; pixels are decoded later)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                what = "not an image Pillow can identify" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
                raise DataError(f"{ref.where}: {what}.") from None


def generate_predictions(chat_model, items: list[EvalItem], predictions_file: str | None, *, benchmark: str,
                         model: str | None = None, batch_size: int = 8, max_new_tokens: int = 32,
                         temperature: float = 0.0, progress: bool = True, already: int = 0,
                         total: int | None = None) -> dict[str, str]:
    """Answer `items` in batches; append each batch to `predictions_file` (None: keep them in memory only)."""
    if batch_size < 1:
        raise DataError("--batch-size must be at least 1.")
    from tqdm.auto import tqdm

    answers: dict[str, str] = {}
    bar = tqdm(total=total if total is not None else already + len(items), initial=already, desc=f"eval {benchmark}",
               unit="q", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            conversations = [[Message("user", item.prompt)] for item in batch]
            images = [item.load_images() for item in batch]
            texts = chat_model.generate(conversations, images, max_new_tokens=max_new_tokens, temperature=temperature)
            records = []
            for item, text in zip(batch, texts):
                answers[item.id] = text
                records.append({"id": item.id, "benchmark": benchmark, "question": item.question,
                                "prediction": text, "prompt": item.prompt, "model": model})
            if predictions_file is not None:
                append_predictions(predictions_file, records)
            bar.update(len(batch))
    finally:
        bar.close()
    return answers
