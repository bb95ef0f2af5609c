"""VQA: a JSONL of `{image, question, answers}` scored with VQAv2's accuracy.

    items = load_vqa("val.jsonl", image_folder="images/")
    metrics, rows = score_vqa(items, {"17": "two", ...})
    vqa_accuracy("Two.", ["2"] * 4 + ["3"] * 6)       # 1.0: "Two." and "2" normalise alike

Records: `image` (path in the image folder), `question` (or LLaVA's `text`), and either `answers`
(VQAv2's ten human answers, as strings or `{"answer": ...}` dicts) or a single `answer`.
Ids come from `question_id`, else `id`, else the line number.

Accuracy, as the VQAv2 evaluation code defines it: both sides normalised (punctuation, number words
to digits, articles dropped, contractions restored), then `min(#matching humans / 3, 1)` averaged
over the leave-one-annotator-out subsets (10 choose 9 for ten answers). A record with one answer is
scored by exact match after the same normalisation. (The official code skips normalisation when all
ten humans agree; LLaVA normalises predictions before submitting, so here both sides always are.)
"""

from __future__ import annotations

import json
import os
import re

from vlmtune.data.images import resolve_image_path
from vlmtune.data.sample import IMAGE_PLACEHOLDER, RecordProblem
from vlmtune.errors import DataError
from vlmtune.evaluation.items import EvalItem, ImageRef

SHORT_ANSWER = "Answer the question using a single word or phrase."

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # a period not followed by a digit ("2.5" keeps its)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _punctuation(text: str) -> str:
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(text: str) -> str:
    """VQAv2's answer normalisation: `"Two dogs."` -> `"2 dogs"`, `"The cat's"` -> `"cat's"`."""
    text = str(text).replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text))


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQAv2 accuracy of one prediction; one answer means normalised exact match."""
    if not answers:
        raise ValueError("no reference answers")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        accs.append(min(1.0, sum(g == pred for g in others) / 3.0))
    return sum(accs) / len(accs)


def _answers(raw: dict, where: str) -> list[str]:
    if "answers" in raw and raw["answers"] is not None:
        value = raw["answers"]
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list) or not value:
            raise DataError(f"{where}: `answers` must be a non-empty list of strings.")
        out = []
        for a in value:
            if isinstance(a, dict):
                a = a.get("answer")
            if not isinstance(a, (str, int, float)) or isinstance(a, bool):
                raise DataError(f"{where}: `answers` holds {a!r}; expected strings or {{\"answer\": ...}} objects.")
            out.append(str(a))
        return out
    if "answer" in raw and raw["answer"] is not None:
        a = raw["answer"]
        if isinstance(a, list):
            return _answers({"answers": a}, where)
        return [str(a)]
    return []


def _read_records(path: str) -> list[tuple[int, dict]]:
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON list is accepted too
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}).") from None
        return [(i + 1, r) for i, r in enumerate(data)]
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno} is not valid JSON ({e.msg}).") from None
    return records


def load_vqa(path: str, *, image_folder: str | None = None, instruction: str = SHORT_ANSWER,
             limit: int | None = None, resolve_images: bool = True) -> list[EvalItem]:
    """Read a VQA file into items (prompt: `<image>\\n` + question + `\\n` + instruction).

    `resolve_images=False` (scoring a predictions file) neither needs nor checks the image files.
    """
    name = os.path.basename(path)
    items, seen = [], {}
    for lineno, raw in _read_records(path):
        where = f"{name} line {lineno}"
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}.")
        qid = raw.get("question_id", raw.get("id", lineno))
        qid = str(qid)
        where = f"{name} line {lineno} (id {qid})"
        if qid in seen:
            raise DataError(f"{where}: id {qid} also used on line {seen[qid]}; ids must be unique.")
        seen[qid] = lineno
        question = raw.get("question", raw.get("text"))
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: missing `question` (a non-empty string).")
        question = question.replace(IMAGE_PLACEHOLDER, "").strip()
        images = []
        image = raw.get("image")
        if image:
            if not isinstance(image, str):
                raise DataError(f"{where}, field `image`: expected a path string, got {type(image).__name__}.")
            if resolve_images:
                try:
                    full = resolve_image_path(image, image_folder)
                except RecordProblem as e:
                    raise DataError(f"{where}, field `image`: {e.detail}") from None
                images.append(ImageRef(where=f"{where}, field `image` ({image})", path=full))
        prompt = question
        if instruction and not question.rstrip().endswith(instruction):
            prompt = question + "\n" + instruction
        if image:
            prompt = IMAGE_PLACEHOLDER + "\n" + prompt
        items.append(EvalItem(id=qid, prompt=prompt, question=question, images=images,
                              meta={"answers": _answers(raw, where), "line": lineno}))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DataError(f"{path} has no questions.")
    return items


def score_vqa(items: list[EvalItem], predictions: dict[str, str]) -> tuple[dict, list[dict]]:
    """(metrics, one scored row per item). Items without reference answers are only counted."""
    rows, total, scored, missing = [], 0.0, 0, 0
    single = multi = 0
    for item in items:
        answers = item.meta["answers"]
        pred = predictions.get(item.id)
        row = {"id": item.id, "question": item.question, "prediction": pred, "answers": answers}
        if pred is None:
            missing += 1
        if answers:
            acc = vqa_accuracy(pred or "", answers)
            total += acc
            scored += 1
            single += len(answers) == 1
            multi += len(answers) > 1
            row["accuracy"] = acc
        rows.append(row)
    metrics = {
        "benchmark": "vqa",
        "questions": len(items),
        "scored": scored,
        "accuracy": total / scored if scored else None,
        "metric": "exact_match" if single and not multi else "vqa_accuracy" if multi and not single else "mixed",
        "missing": missing,
    }
    return metrics, rows


def vqa_summary(metrics: dict) -> str:
    if metrics["accuracy"] is None:
        return f"VQA: {metrics['questions']} questions, no reference answers to score against."
    name = {"exact_match": "exact match", "vqa_accuracy": "VQA accuracy"}.get(metrics["metric"], "accuracy")
    return f"VQA: {metrics['scored']} questions, {name} {metrics['accuracy'] * 100:.2f}%"
