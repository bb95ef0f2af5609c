"""Check a whole dataset before training: every record parsed, every image decoded, every sample tokenized.

    report = check_dataset(["data.json"], image_folder="images/", tokenizer=tok, template_name="vicuna_v1",
                           image_seq_len=576, max_length=2048)
    report["problems"]   # [{index, id, reason, detail, source}], sorted by index

Images are decoded fully (`load()`, not just the header) in a thread pool: Pillow releases the GIL
while decoding, and each distinct file is decoded once however many records use it.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from vlmtune.data.dataset import image_root
from vlmtune.data.images import load_image, resolve_image_path
from vlmtune.data.readers import parse_record, read_records
from vlmtune.data.sample import RecordProblem, problem_dict
from vlmtune.data.templates import get_template
from vlmtune.data.tokenize import encode_sample
from vlmtune.errors import DataError

TOKEN_NOTE = "token checks (lengths, too-long, no-trained-tokens, template-mismatch) need --model (or --tokenizer)."


def _decode(path: str):
    try:
        load_image(path).close()
        return None
    except RecordProblem as p:
        return p


def length_stats(lengths: list[int]) -> dict | None:
    if not lengths:
        return None
    s = sorted(lengths)

    def rank(q: float) -> int:  # nearest-rank percentile
        return s[min(len(s) - 1, max(0, -(-int(q * len(s) * 100) // 100) - 1))]

    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"min": s[0], "median": median, "p95": rank(0.95), "max": s[-1]}


def check_dataset(paths, *, image_folder=None, tokenizer=None, template_name=None, image_seq_len=None,
                  image_token="<image>", max_length=2048, overlong="skip", allow_urls=False, workers=None) -> dict:
    """Every problem by record, counts per modality and (with a tokenizer) token lengths incl. image tokens."""
    records = read_records(paths)
    if not records:
        raise DataError(f"no records in {paths if isinstance(paths, str) else ', '.join(map(str, paths))}.")
    if image_folder is not None and not os.path.isdir(image_folder):
        raise DataError(f"image folder {image_folder} does not exist or is not a folder.")
    template = get_template(template_name or "vicuna_v1", tokenizer) if tokenizer is not None else None
    problems: list[dict] = []
    bad: set[int] = set()

    def report(sample_or_raw, reason, detail, index, rid, source):
        problems.append(problem_dict(reason, detail, index=index, id=rid, source=source))
        bad.add(index)

    samples = []
    for source, index, raw in records:
        try:
            samples.append(parse_record(raw, index, source))
        except RecordProblem as p:
            rid = raw.get("id") if isinstance(raw, dict) else None
            report(raw, p.reason, p.detail, index, None if rid is None else str(rid), source)

    # Resolve every image path, then decode each distinct file once, in parallel.
    resolved: dict[tuple[str, str], str | RecordProblem] = {}
    for s in samples:
        root = image_root(s, image_folder)
        for path in s.images:
            key = (root, path)
            if key not in resolved:
                try:
                    resolved[key] = resolve_image_path(path, root, allow_urls)
                except RecordProblem as p:
                    resolved[key] = p
    files = sorted({v for v in resolved.values() if isinstance(v, str)})
    with warnings.catch_warnings():  # load_image checks the pixel limit itself
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            decoded = dict(zip(files, pool.map(_decode, files)))

    modalities = {"text": 0, "image": 0, "multi_image": 0}
    kinds: dict[str, int] = {}
    lengths: list[int] = []
    for s in samples:
        n = len(s.images)
        modalities["text" if n == 0 else "image" if n == 1 else "multi_image"] += 1
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
        root = image_root(s, image_folder)
        for path in s.images:
            r = resolved[(root, path)]
            p = r if isinstance(r, RecordProblem) else decoded.get(r)
            if p is not None:
                detail = p.detail if path in p.detail else f"{path}: {p.detail}"
                report(s, p.reason, detail, s.index, s.id, s.source)
        if template is not None:
            try:
                enc = encode_sample(s, tokenizer, template, image_token=image_token, image_seq_len=image_seq_len,
                                    max_length=max_length, overlong=overlong)
                lengths.append(len(enc))
            except RecordProblem as p:
                if getattr(p, "length", None):
                    lengths.append(p.length)  # the true max matters when choosing data.max_length
                report(s, p.reason, p.detail, s.index, s.id, s.source)

    notes = []
    if template is None:
        notes.append(TOKEN_NOTE)
    elif image_seq_len is None and any(s.images for s in samples):
        notes.append("image tokens counted as 1 each: the number of tokens per image is unknown (give --model or --image-seq-len).")
    problems.sort(key=lambda p: p["index"])
    return {"records": len(records), "ok": len(records) - len(bad), "problems": problems, "modalities": modalities,
            "kinds": kinds, "lengths": length_stats(lengths), "template": template.name if template else None,
            "max_length": max_length if template else None, "notes": notes}
