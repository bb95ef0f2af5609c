"""Token ids and labels for one sample, from character spans and the tokenizer's offsets.

    enc = encode_sample(sample, tokenizer, get_template("vicuna_v1"), image_seq_len=576, max_length=2048)
    enc.input_ids, enc.labels, enc.num_images        # each <image> expanded to 576 ids, labelled -100

A token is trained when its (whitespace-stripped) characters lie inside a trained segment of the
rendered text. A token with non-whitespace characters on both sides of a boundary means the
template and the tokenizer don't line up: that record is a `template-mismatch` problem, never a
sample silently trained at loss 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

from vlmtune.data.sample import IMAGE_PLACEHOLDER, Message, RecordProblem, Sample
from vlmtune.data.templates import RawTemplate, Segment
from vlmtune.errors import VlmtuneError

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    num_images: int  # how many of sample.images this encoding uses (fewer after truncation)

    def __len__(self) -> int:
        return len(self.input_ids)


def template_for(sample: Sample, template, tokenizer=None):
    """Raw-text records always use the raw template (text + EOS, all trained), whatever the chat template."""
    if sample.kind == "text" and template.name != "raw":
        return RawTemplate(getattr(tokenizer, "eos_token", None) or "</s>")
    return template


def label_tokens(text: str, segments: list[Segment], offsets: list[tuple[int, int]]) -> list[bool]:
    """Per token: trained or not. Raises `template-mismatch` for a token straddling a boundary."""
    flags = []
    for seg in segments:
        flags += [seg.trained] * len(seg.text)
    nonws = [not c.isspace() for c in text]
    tr = [0] + list(accumulate(int(f and w) for f, w in zip(flags, nonws)))  # trained non-whitespace chars
    un = [0] + list(accumulate(int(not f and w) for f, w in zip(flags, nonws)))  # untrained non-whitespace chars
    tr_all = [0] + list(accumulate(int(f) for f in flags))
    out = []
    for s, e in offsets:
        if e <= s:
            out.append(False)  # added special tokens (BOS) have empty spans
            continue
        t, u = tr[e] - tr[s], un[e] - un[s]
        if t and u:
            raise RecordProblem("template-mismatch", f"token {text[s:e]!r} at characters {s}-{e} straddles a trained/untrained "
                                "boundary: the template and the tokenizer don't line up.")
        if t or u:
            out.append(bool(t))
        else:  # whitespace-only token: trained only when entirely inside a trained span
            out.append(tr_all[e] - tr_all[s] == e - s)
    return out


def _image_token_id(tokenizer, image_token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(image_token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id and image_token != tokenizer.unk_token):
        return None
    return tid


def _encode_once(messages: list[Message], tokenizer, template, image_token: str, image_seq_len: int | None):
    segments = template.render(messages)
    text = "".join(s.text for s in segments)
    if image_token != IMAGE_PLACEHOLDER:
        text_for_tok = text.replace(IMAGE_PLACEHOLDER, image_token)
        if len(image_token) != len(IMAGE_PLACEHOLDER):
            segments = [Segment(s.text.replace(IMAGE_PLACEHOLDER, image_token), s.trained) for s in segments]
        text = text_for_tok
    n_images = text.count(image_token)
    if not getattr(tokenizer, "is_fast", False):
        raise VlmtuneError("computing trained spans needs a fast tokenizer (with offsets); this tokenizer is not one.")
    enc = tokenizer(text, add_special_tokens=template.add_special_tokens, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    trained = label_tokens(text, segments, offsets)
    image_id = _image_token_id(tokenizer, image_token) if n_images else None
    found = sum(1 for i in ids if i == image_id) if image_id is not None else 0
    if found != n_images:
        raise RecordProblem("image-token-count", f"the text has {n_images} `{image_token}` placeholders but the tokenizer "
                            f"produced {found} `{image_token}` tokens (is `{image_token}` a special token of this tokenizer?).")
    input_ids, labels = [], []
    for tok, is_trained in zip(ids, trained):
        if tok == image_id and n_images:
            copies = image_seq_len or 1
            input_ids += [tok] * copies
            labels += [IGNORE_INDEX] * copies
        else:
            input_ids.append(tok)
            labels.append(tok if is_trained else IGNORE_INDEX)
    return Encoded(input_ids, labels, n_images)


def _turn_prefixes(messages: list[Message]):
    """Message lists with whole (user, assistant) exchanges dropped from the end, longest first."""
    head = messages[:1] if messages and messages[0].role == "system" else []
    body = messages[len(head):]
    ends = [i + 1 for i, m in enumerate(body) if m.role == "assistant"]
    for end in reversed(ends):
        yield head + body[:end]


def encode_sample(sample: Sample, tokenizer, template, *, image_token: str = IMAGE_PLACEHOLDER,
                  image_seq_len: int | None = None, max_length: int, overlong: str = "skip") -> Encoded:
    """Tokenize one sample. Problems: image-token-count, template-mismatch, too-long, no-trained-tokens.

    `overlong="skip"` reports a sample over `max_length` (counting expanded image tokens);
    `"truncate"` drops whole exchanges from the end until it fits, so an image span is never cut.
    """
    if sample.num_placeholders != len(sample.images):
        raise RecordProblem("image-token-count", f"{sample.num_placeholders} `<image>` placeholders in the text but {len(sample.images)} images.")
    template = template_for(sample, template, tokenizer)
    enc = _encode_once(sample.messages, tokenizer, template, image_token, image_seq_len)
    if len(enc) > max_length:
        full = enc
        fitted = None
        if overlong == "truncate" and sample.kind != "text":
            for messages in list(_turn_prefixes(sample.messages))[1:]:
                candidate = _encode_once(messages, tokenizer, template, image_token, image_seq_len)
                if len(candidate) <= max_length:
                    fitted = candidate
                    break
        if fitted is None:
            n_img = full.num_images * (image_seq_len or 1)
            extra = " even with whole turns dropped from the end" if overlong == "truncate" else ""
            problem = RecordProblem("too-long", f"{len(full)} tokens ({n_img} image tokens) > max_length {max_length}{extra}.")
            problem.length = len(full)  # so length statistics can include the records that don't fit
            raise problem
        enc = fitted
    if all(label == IGNORE_INDEX for label in enc.labels):
        raise RecordProblem("no-trained-tokens", "no token of this record is trained (no assistant answer survived).")
    return enc
