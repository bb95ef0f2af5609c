"""Conversation templates: each a small named object that renders messages into text segments.

    t = get_template("vicuna_v1")
    t.render(messages)         # [Segment(text, trained)], joined = the full training text
    t.render_prompt(messages)  # text for generation, ending with the assistant header

Only assistant answers and their end-of-turn marker are `trained`. Labels are later computed from
these character spans and the tokenizer's offsets (see tokenize.py), never by counting tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmtune.data.sample import IMAGE_PLACEHOLDER, Message, RecordProblem
from vlmtune.errors import VlmtuneError

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@dataclass
class Segment:
    text: str
    trained: bool


def _split_system(messages: list[Message]) -> tuple[str | None, list[Message]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return None, list(messages)


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbours with the same `trained` flag and drop empty ones."""
    out: list[Segment] = []
    for s in segments:
        if not s.text:
            continue
        if out and out[-1].trained == s.trained:
            out[-1] = Segment(out[-1].text + s.text, s.trained)
        else:
            out.append(s)
    return out


@dataclass
class Template:
    """A turn-based template. Formats use `{content}`; the system block is omitted when its text is empty
    unless `always_system` (vicuna always writes "{system} ")."""

    name: str
    user: str
    assistant_header: str
    assistant_end: str  # trained with the answer (`</s>`, `<|im_end|>`, `<|eot_id|>`)
    system: str = "{content}"
    default_system: str = ""
    always_system: bool = False
    begin: str = ""  # literal text before everything (llama3's <|begin_of_text|>)
    after_assistant: str = ""  # untrained text after the end marker (ChatML's "\n")
    generation_header: str | None = None  # what render_prompt ends with (default: assistant_header)
    add_special_tokens: bool = True  # let the tokenizer add its BOS
    stop_strings: list[str] = field(default_factory=list)

    def _head(self, system: str | None) -> list[Segment]:
        text = self.default_system if system is None else system
        segs = [Segment(self.begin, False)]
        if text or self.always_system:
            segs.append(Segment(self.system.format(content=text), False))
        return segs

    def render(self, messages: list[Message]) -> list[Segment]:
        system, turns = _split_system(messages)
        segs = self._head(system)
        for m in turns:
            if m.role == "user":
                segs.append(Segment(self.user.format(content=m.content), False))
            else:
                segs += [Segment(self.assistant_header, False), Segment(m.content + self.assistant_end, True),
                         Segment(self.after_assistant, False)]
        return _merge(segs)

    def render_prompt(self, messages: list[Message]) -> str:
        system, turns = _split_system(messages)
        text = "".join(s.text for s in self._head(system))
        for m in turns:
            if m.role == "user":
                text += self.user.format(content=m.content)
            else:
                text += self.assistant_header + m.content + self.assistant_end + self.after_assistant
        header = self.assistant_header if self.generation_header is None else self.generation_header
        return text + header


class PlainTemplate:
    """LLaVA's `plain` (projector pretraining): the image placeholders, then the caption + "\\n" (trained).

    As in LLaVA's preprocess_plain, the user's text is replaced by its image placeholders and only
    the first exchange is used."""

    name = "plain"
    add_special_tokens = True
    stop_strings = ["\n"]

    @staticmethod
    def _images(messages: list[Message]) -> str:
        n = sum(m.content.count(IMAGE_PLACEHOLDER) for m in messages if m.role == "user")
        return IMAGE_PLACEHOLDER * n

    def render(self, messages: list[Message]) -> list[Segment]:
        _, turns = _split_system(messages)
        first = turns[:2]
        answer = next((m.content for m in first if m.role == "assistant"), "")
        return _merge([Segment(self._images(first), False), Segment(answer + "\n", True)])

    def render_prompt(self, messages: list[Message]) -> str:
        _, turns = _split_system(messages)
        return self._images(turns[:1])


class RawTemplate:
    """Plain text for continued pretraining: user text untrained, assistant text + EOS trained."""

    name = "raw"
    add_special_tokens = True

    def __init__(self, eos: str = "</s>"):
        self.eos = eos
        self.stop_strings = [eos]

    def render(self, messages: list[Message]) -> list[Segment]:
        segs = []
        for m in messages:
            if m.role == "assistant":
                segs.append(Segment(m.content + self.eos, True))
            else:
                segs.append(Segment(m.content + "\n", False))
        return _merge(segs)

    def render_prompt(self, messages: list[Message]) -> str:
        return "".join(m.content + "\n" if m.role != "assistant" else m.content + self.eos for m in messages)


class ModelTemplate:
    """The tokenizer's (or processor's) own chat template. Trained spans come from rendering each
    prefix of the conversation: the text an assistant turn adds after the generation prompt is trained
    (surrounding whitespace excepted). A template whose renderings are not prefixes of each other is a
    `template-mismatch` for that record."""

    name = "model"
    add_special_tokens = False  # chat templates write their own BOS

    def __init__(self, tokenizer):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise VlmtuneError("template `model` needs a tokenizer or processor with a chat template; "
                               "this one has none. Pick a named template with --template / data.template.")
        self.tokenizer = tokenizer
        eos = getattr(tokenizer, "eos_token", None) or getattr(getattr(tokenizer, "tokenizer", None), "eos_token", None)
        self.stop_strings = [eos] if eos else []

    def _apply(self, messages: list[Message], generation: bool) -> str:
        plain = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return self.tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation)
        except Exception:
            pass
        parts = []  # templates (llava-hf's) that expect content as a list of typed parts
        for m in messages:
            content = []
            for i, piece in enumerate(m.content.split(IMAGE_PLACEHOLDER)):
                if i:
                    content.append({"type": "image"})
                if piece:
                    content.append({"type": "text", "text": piece})
            parts.append({"role": m.role, "content": content})
        try:
            return self.tokenizer.apply_chat_template(parts, tokenize=False, add_generation_prompt=generation)
        except Exception as e:
            raise RecordProblem("template-mismatch", f"the model's chat template failed on this record: {type(e).__name__}: {e}") from None

    def render(self, messages: list[Message]) -> list[Segment]:
        full = self._apply(messages, False)
        segs, pos = [], 0
        for i, m in enumerate(messages):
            if m.role != "assistant":
                continue
            before = self._apply(messages[:i], True)
            after = self._apply(messages[: i + 1], False)
            if not (after.startswith(before) and full.startswith(after) and len(before) >= pos):
                raise RecordProblem("template-mismatch", f"the chat template's rendering of turn {i} is not a prefix of the "
                                    "whole conversation, so trained spans can't be located; pick a named template.")
            answer = after[len(before):]
            start = len(before) + len(answer) - len(answer.lstrip())  # whitespace around the answer is untrained
            trained = answer.strip()
            segs += [Segment(full[pos:start], False), Segment(trained, True)]
            pos = start + len(trained)
        segs.append(Segment(full[pos:], False))
        return _merge(segs)

    def render_prompt(self, messages: list[Message]) -> str:
        return self._apply(messages, True)


def _vicuna() -> Template:
    return Template("vicuna_v1", user="USER: {content} ", assistant_header="ASSISTANT: ", assistant_end="</s>",
                    system="{content} ", default_system=VICUNA_SYSTEM, always_system=True,
                    generation_header="ASSISTANT:", stop_strings=["</s>"])


def _chatml(name: str) -> Template:
    return Template(name, user="<|im_start|>user\n{content}<|im_end|>\n", assistant_header="<|im_start|>assistant\n",
                    assistant_end="<|im_end|>", system="<|im_start|>system\n{content}<|im_end|>\n", after_assistant="\n",
                    add_special_tokens=(name == "internlm2_chat"), stop_strings=["<|im_end|>"])


def _llama3() -> Template:
    h = "<|start_header_id|>{}<|end_header_id|>\n\n"
    return Template("llama3", user=h.format("user") + "{content}<|eot_id|>", assistant_header=h.format("assistant"),
                    assistant_end="<|eot_id|>", system=h.format("system") + "{content}<|eot_id|>",
                    begin="<|begin_of_text|>", add_special_tokens=False, stop_strings=["<|eot_id|>"])


TEMPLATE_NAMES = ("vicuna_v1", "plain", "internlm2_chat", "chatml", "llama3", "raw", "model")


def get_template(name: str, tokenizer=None):
    """A template by name; `model` and `raw` use the tokenizer (its chat template / its EOS)."""
    if name == "vicuna_v1":
        return _vicuna()
    if name == "plain":
        return PlainTemplate()
    if name in ("internlm2_chat", "chatml"):
        return _chatml(name)
    if name == "llama3":
        return _llama3()
    if name == "raw":
        return RawTemplate(getattr(tokenizer, "eos_token", None) or "</s>")
    if name == "model":
        return ModelTemplate(tokenizer)
    raise VlmtuneError(f"unknown template {name!r}; known templates: {', '.join(TEMPLATE_NAMES)}.")
