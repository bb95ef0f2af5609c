"""Read .json / .jsonl / .parquet files of any supported record format into `Sample`s.

Formats, detected per record so that one file may mix them:
  - LLaVA: `conversations: [{from: human|gpt|system, value}]`, `image` a path or a list of paths;
  - MiniCPM-V: `conversations: [{role, content}]` (or `messages`), `image` a path or a dict
    `{"<image_00>": path, ...}` whose keys appear in the text as placeholders;
  - caption pairs: `{"image", "caption"}` (LLaVA's 558k pretraining file is already LLaVA format);
  - alpaca: `instruction`, optional `input`, `output` (optional `system`);
  - raw text: `{"text"}` for continued pretraining (everything trained).

A file that can't be read at all is a `DataError` (exit 2); a record that can't be used is a
`RecordProblem` with a stable reason slug, reported by index.
"""

from __future__ import annotations

import json
import os
import re

from vlmtune.data.sample import IMAGE_PLACEHOLDER, Message, RecordProblem, Sample, problem_dict
from vlmtune.errors import DataError

SUFFIXES = (".json", ".jsonl", ".parquet")
_LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _as_list(paths) -> list[str]:
    if paths is None:
        raise DataError("no data file given.")
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _read_json(path: str, text: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # a JSONL file named .json
            return _read_jsonl(path, text)
        raise DataError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path} must hold a JSON list of records, got a {type(data).__name__}.")
    return data


class BadLine:
    """A JSONL line that isn't JSON: kept in place as a record, so the check reports it (reason `bad-json`)
    with the line number, and the other records of a large file are still checked."""

    def __init__(self, lineno: int, message: str):
        self.lineno, self.message = lineno, message


def _read_jsonl(path: str, text: str) -> list:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            records.append(BadLine(lineno, e.msg))
    if records and all(isinstance(r, BadLine) for r in records):
        raise DataError(f"{path} is not JSON Lines: line {records[0].lineno} is not valid JSON ({records[0].message}).")
    return records


def _read_parquet(path: str) -> list:
    try:
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises many types for a bad file
        raise DataError(f"{path} is not a readable parquet file ({type(e).__name__}: {e}).") from None


def read_file(path: str) -> list:
    """All raw records of one file, in order."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .json, .jsonl or .parquet.")
    if not os.path.isfile(path):
        raise DataError(f"data file {path} does not exist." if not os.path.exists(path) else f"{path} is not a file.")
    if suffix == ".parquet":
        return _read_parquet(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"can't read {path}: {e}") from None
    return _read_json(path, text) if suffix == ".json" else _read_jsonl(path, text)


def read_records(paths) -> list[tuple[str, int, dict]]:
    """(source file, index in the combined dataset, raw record) for every record of every file."""
    out: list[tuple[str, int, dict]] = []
    for path in _as_list(paths):
        for raw in read_file(path):
            out.append((path, len(out), raw))
    return out


# ---------------------------------------------------------------- parsing one record

def _string(value, what: str) -> str:
    if not isinstance(value, str):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise RecordProblem("bad-field", f"{what} must be a string, got {got}.")
    return value


def _image_field(raw: dict) -> tuple[list[str], dict[str, str] | None]:
    """(image paths, placeholder-key map for MiniCPM-V dicts or None)."""
    value = raw.get("image", raw.get("images"))
    if value is None or value == [] or value == "":
        return [], None
    if isinstance(value, str):
        return [value], None
    if isinstance(value, list):
        return [_string(v, f"`image` entry {i}") for i, v in enumerate(value)], None
    if isinstance(value, dict):
        keys = {_string(k, "`image` key"): _string(v, f"`image[{k!r}]`") for k, v in value.items()}
        return [], keys
    raise RecordProblem("bad-field", f"`image` must be a path, a list of paths or a dict, got a {type(value).__name__}.")


def _turns(raw: dict) -> list[Message]:
    turns = raw.get("conversations", raw.get("messages"))
    if not isinstance(turns, list):
        raise RecordProblem("bad-field", "`conversations` must be a list of turns.")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordProblem("bad-field", f"turn {i} must be an object, got a {type(turn).__name__}.")
        if turn.get("from") is not None or turn.get("value") is not None:
            who, text = turn.get("from"), turn.get("value")
            field_names = ("from", "value")
        else:
            who, text = turn.get("role"), turn.get("content")
            field_names = ("role", "content")
        who = _string(who, f"turn {i} `{field_names[0]}`")
        role = _LLAVA_ROLES.get(who.lower())
        if role is None:
            raise RecordProblem("bad-field", f"turn {i} has unknown role {who!r} (expected human/gpt/system or user/assistant/system).")
        messages.append(Message(role, _string(text, f"turn {i} `{field_names[1]}`")))
    return messages


def check_role_order(messages: list[Message]) -> None:
    """Optional system first, then user/assistant alternating, starting with user, ending with assistant."""
    if not messages or all(m.role == "system" for m in messages):
        raise RecordProblem("empty-conversation", "the record has no user/assistant turns.")
    body = messages[1:] if messages[0].role == "system" else messages
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            n = i + (len(messages) - len(body))
            if m.role == "system":
                raise RecordProblem("bad-role-order", f"turn {n} is a system turn; only the first turn may be.")
            if i == 0:
                raise RecordProblem("bad-role-order", f"the first turn is the {m.role}'s; it must be the user's.")
            raise RecordProblem("bad-role-order", f"turns {n - 1} and {n} are both from the {m.role}.")
    if body[-1].role != "assistant":
        raise RecordProblem("bad-role-order", "the last turn is the user's; it must be the assistant's answer.")


def _apply_image_keys(messages: list[Message], keys: dict[str, str]) -> list[str]:
    """MiniCPM-V: replace `<image_00>`-style keys by `<image>`; images ordered by appearance."""
    found: list[tuple[int, int, str]] = []  # (message, position, key)
    for mi, m in enumerate(messages):
        for key in keys:
            start = m.content.find(key)
            while start != -1:
                found.append((mi, start, key))
                start = m.content.find(key, start + len(key))
    missing = [k for k in keys if not any(f[2] == k for f in found)]
    if missing:
        raise RecordProblem("image-token-count", f"image key {missing[0]!r} does not appear in the conversation.")
    found.sort()
    images = [keys[k] for _, _, k in found]
    for m in messages:
        for key in keys:
            m.content = m.content.replace(key, IMAGE_PLACEHOLDER)
    return images


def _is_llava_turns(raw: dict) -> bool:
    turns = raw.get("conversations")
    return isinstance(turns, list) and all(isinstance(t, dict) and "from" in t for t in turns)


def _image_first(messages: list[Message]) -> None:
    """LLaVA's `preprocess_multimodal` (and XTuner's llava_map_fn): a single-image turn becomes `<image>\\n` + its text.

    LLaVA-665k has many questions written as `...?\\n<image>`; LLaVA trains them with the image first, so a
    byte-exact vicuna_v1 rendering must too. Only for LLaVA-format (`from`/`value`) single-image records.
    """
    if sum(m.content.count(IMAGE_PLACEHOLDER) for m in messages) != 1:
        return
    for m in messages:
        if IMAGE_PLACEHOLDER in m.content:
            m.content = (IMAGE_PLACEHOLDER + "\n" + m.content.replace(IMAGE_PLACEHOLDER, "").strip()).strip()


def parse_record(raw, index: int, source: str) -> Sample:
    """One raw record into a `Sample`, or `RecordProblem` (bad-field, empty-conversation, bad-role-order, image-token-count)."""
    if isinstance(raw, BadLine):
        raise RecordProblem("bad-json", f"line {raw.lineno} of {source} is not valid JSON ({raw.message}).")
    if not isinstance(raw, dict):
        raise RecordProblem("bad-field", f"a record must be a JSON object, got a {type(raw).__name__}.")
    rid = raw.get("id")
    rid = None if rid is None else str(rid)
    images, keys = _image_field(raw)
    kind = "chat"
    if raw.get("conversations") is not None or raw.get("messages") is not None:
        messages = _turns(raw)
    elif "caption" in raw:
        messages = [Message("user", IMAGE_PLACEHOLDER * len(images)), Message("assistant", _string(raw["caption"], "`caption`"))]
        kind = "caption"
    elif "instruction" in raw or "output" in raw:
        prompt = _string(raw.get("instruction"), "`instruction`")
        extra = raw.get("input")
        if extra not in (None, ""):
            prompt = f"{prompt}\n\n{_string(extra, '`input`')}"
        messages = [Message("user", prompt), Message("assistant", _string(raw.get("output"), "`output`"))]
        if raw.get("system"):
            messages.insert(0, Message("system", _string(raw["system"], "`system`")))
    elif "text" in raw:
        messages = [Message("assistant", _string(raw["text"], "`text`"))]
        kind = "text"
    else:
        raise RecordProblem("bad-field", "unrecognised record: expected `conversations`, `messages`, "
                            "`instruction`/`output`, `image`/`caption` or `text`.")
    if kind != "text":
        check_role_order(messages)
    if keys is not None:
        images = _apply_image_keys(messages, keys)
    elif len(images) == 1 and _is_llava_turns(raw):
        _image_first(messages)
    sample = Sample(messages=messages, images=images, id=rid, index=index, source=source, kind=kind)
    n = sample.num_placeholders
    if n != len(images):
        hint = " Put `<image>` in the text where each image goes." if n < len(images) else ""
        raise RecordProblem("image-token-count", f"{n} `<image>` placeholders in the text but {len(images)} images.{hint}")
    return sample


def load_samples(paths) -> tuple[list[Sample], list[dict]]:
    """Parsed samples plus problem dicts {index, id, reason, detail, source} for records that failed."""
    samples, problems = [], []
    for source, index, raw in read_records(paths):
        try:
            samples.append(parse_record(raw, index, source))
        except RecordProblem as p:
            rid = raw.get("id") if isinstance(raw, dict) else None
            problems.append(problem_dict(p.reason, p.detail, index=index, id=None if rid is None else str(rid), source=source))
    return samples, problems


def is_url(path: str) -> bool:
    return bool(_URL.match(path))
