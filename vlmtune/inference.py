"""The one generation engine: load a model (+ adapter) and chat with it, batched or streaming.

    chat = load_chat_model("runs/my")                          # RUN folder, HF folder/hub id, or text-only LLM
    chat.generate([[Message("user", "What is this?")]], [[img]])  # -> ["A cat."]
    for piece in chat.stream([Message("user", "Hi")], []): print(piece, end="")

`chat`, `serve`, `eval` and training-time evaluation all use `ChatModel`, so a prompt is rendered
the same way everywhere: by the vlmtune template the model was trained with (vlmtune.data.templates),
or by the processor's own chat template when none is named.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from vlmtune.data.sample import IMAGE_PLACEHOLDER, Message
from vlmtune.errors import ModelLoadError, VlmtuneError

QUANTIZATIONS = (None, "4bit", "8bit")


class PromptError(VlmtuneError):
    """A conversation that can't be turned into model inputs (bad roles, image count, too long)."""


# --------------------------------------------------------------------------- locating what to load


@dataclass
class ModelSource:
    """What `load_chat_model` will load: a base model folder/hub id, an optional peft adapter, run facts."""

    base: str
    adapter: str | None = None
    template: str | None = None  # the template the run trained with (vlmtune_run.json)
    quantization: str | None = None  # the quantization the adapter was trained against
    processor_from: str | None = None  # a folder with the processor saved beside the adapter/run


def read_run_info(folder: Path) -> dict:
    f = folder / "vlmtune_run.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{f} is not readable JSON: {e}") from None


def _has_processor(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("tokenizer_config.json", "tokenizer.json", "processor_config.json"))


def resolve_source(model: str, adapter: str | None = None) -> ModelSource:
    """Decide what `model` is by its contents (never its name): a RUN folder, an adapter folder, or a model."""
    p = Path(model)
    if p.is_dir() and not (p / "config.json").is_file() and (p / "final").is_dir():
        p = p / "final"  # a run folder: its final model or adapter
        model = str(p)
    if p.is_dir() and (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
        if adapter is not None:
            raise ModelLoadError(f"{model} is itself an adapter; pass its base model as MODEL and the adapter with --adapter.")
        info = read_run_info(p)
        base = info.get("base_model") or _adapter_base(p)
        if not base:
            raise ModelLoadError(f"{model} is a peft adapter that does not name its base model "
                                 "(no vlmtune_run.json `base_model`, no `base_model_name_or_path`); pass the base as MODEL and the adapter with --adapter.")
        return ModelSource(base=str(base), adapter=str(p), template=info.get("template"),
                           quantization=info.get("quantization"), processor_from=str(p) if _has_processor(p) else None)
    if p.exists() and not p.is_dir():
        raise ModelLoadError(f"{model} is a file, not a model folder.")
    if p.is_dir() and not (p / "config.json").is_file():
        raise ModelLoadError(f"{model} is not a model folder: no config.json (and no adapter_config.json or final/).")
    info = read_run_info(p) if p.is_dir() else {}
    src = ModelSource(base=model, template=info.get("template"))
    if adapter is not None:
        a = Path(adapter)
        if not (a / "adapter_config.json").is_file():
            raise ModelLoadError(f"--adapter {adapter} is not a peft adapter folder (no adapter_config.json).")
        ainfo = read_run_info(a)
        src.adapter = str(a)
        src.template = src.template or ainfo.get("template")
        src.quantization = ainfo.get("quantization")
        src.processor_from = str(a) if _has_processor(a) else None
    return src


def _adapter_base(folder: Path) -> str | None:
    try:
        return json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{folder}/adapter_config.json is not readable JSON: {e}") from None


# --------------------------------------------------------------------------- loading


def quantization_config(quantization: str | None, family=None):
    """BitsAndBytesConfig for the LLM only: vision tower, projector and lm_head stay in full precision."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise VlmtuneError(f"quantization must be 4bit or 8bit, got {quantization!r}.")
    from transformers import BitsAndBytesConfig

    skip = ["lm_head"]
    if family is not None:
        skip += [p.split(".")[-1] for p in (*family.vision, *family.projector) if p]
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def _parse_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16, "auto": None}
    if dtype not in names:
        raise VlmtuneError(f"dtype must be one of {', '.join(names)}; got {dtype!r}.")
    return names[dtype]


def load_base_model(path: str, *, quantization=None, trust_remote_code=False, dtype=None, device=None):
    """(model, processor_or_tokenizer, family) for an HF VLM or text-only LLM, in its own dtype unless told."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from vlmtune.models.processing import load_processing, read_config
    from vlmtune.models.registry import get_family

    config = read_config(path, trust_remote_code)
    family = get_family(config.model_type)
    info = load_processing(path, trust_remote_code)
    cls = AutoModelForImageTextToText if family.kind == "vlm" else AutoModelForCausalLM
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": _parse_dtype(dtype) or "auto"}
    qc = quantization_config(quantization, family)
    if qc is not None:
        kw["quantization_config"] = qc
        if dtype is None:
            kw["dtype"] = torch.bfloat16 if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else torch.float16
    try:
        model = cls.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the model weights of {path}: {str(e).splitlines()[0]}") from None
    if qc is None:
        model.to(device or _default_device())
    model.eval()
    return model, (info.processor if family.kind == "vlm" else info.tokenizer), family


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def apply_adapter(model, adapter: str):
    """Wrap `model` with a peft adapter (not merged), checking that the adapter fits this base."""
    from peft import PeftModel

    check_adapter_files(adapter)
    try:
        peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"adapter {adapter} does not fit this base model (it was trained on another base?): {first}") from None
    missing = unloaded_adapter_keys(peft_model, adapter)
    if missing:
        raise ModelLoadError(f"adapter {adapter} does not fit this base model: {len(missing)} of its weights have no "
                             f"place in it (e.g. {missing[0]}); it was trained on another base.")
    peft_model.eval()
    return peft_model


def check_adapter_files(adapter: str) -> None:
    """The adapter's weights must be a readable local safetensors file (peft would otherwise go to the Hub)."""
    from safetensors import SafetensorError, safe_open

    f = Path(adapter) / "adapter_model.safetensors"
    if not f.is_file():
        if (Path(adapter) / "adapter_model.bin").is_file():
            raise ModelLoadError(f"{adapter} holds a pickled adapter_model.bin; vlmtune reads only safetensors. "
                                 "Re-save it with a current peft (safe_serialization=True).")
        raise ModelLoadError(f"{adapter} has no adapter_model.safetensors (the adapter's weights are missing).")
    try:
        with safe_open(str(f), "pt") as sf:
            list(sf.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{f} is not a readable safetensors file: {e}") from None


def unloaded_adapter_keys(peft_model, adapter: str) -> list[str]:
    """Adapter tensors that did not land anywhere in the wrapped model (a different base)."""
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    check_adapter_files(adapter)
    f = Path(adapter) / "adapter_model.safetensors"
    with safe_open(str(f), "pt") as sf:
        saved = {k: tuple(sf.get_slice(k).get_shape()) for k in sf.keys()}
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    return [k for k, shape in saved.items() if expected.get(k) != shape]


def load_chat_model(model: str, adapter: str | None = None, *, quantization: str | None = None, template: str | None = None,
                    trust_remote_code: bool = False, dtype=None, device=None) -> "ChatModel":
    """A ChatModel for an HF folder/hub id, a RUN folder (its final/ + base), or an adapter folder."""
    src = resolve_source(model, adapter)
    base_model, proc, family = load_base_model(src.base, quantization=quantization, trust_remote_code=trust_remote_code,
                                               dtype=dtype, device=device)
    if src.processor_from:
        proc = _load_processor(src.processor_from, family, trust_remote_code) or proc
    if src.adapter:
        base_model = apply_adapter(base_model, src.adapter)
    return ChatModel(base_model, proc, template or src.template)


def _load_processor(folder: str, family, trust_remote_code: bool):
    from transformers import AutoProcessor, AutoTokenizer

    try:
        if family.kind == "vlm":
            return AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- chatting


def as_message(m) -> Message:
    if isinstance(m, Message):
        return m
    if isinstance(m, dict):
        return Message(m["role"], m["content"])
    raise PromptError(f"a message must be a Message or a {{role, content}} dict, got {type(m).__name__}.")


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class ChatModel:
    """A model + its processor (VLM) or tokenizer (LLM) + the template prompts are rendered with.

    Constructible from in-memory objects (training builds one for evaluation during training).
    `template_name` None: the processor's own chat template if it has one, else the family default.
    """

    def __init__(self, model, processor_or_tokenizer, template_name: str | None = None):
        from vlmtune.data.templates import get_template

        self.model = model
        self.processor = processor_or_tokenizer
        self.tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
        self.is_vlm = self.tokenizer is not processor_or_tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if template_name is None:
            if getattr(processor_or_tokenizer, "chat_template", None):
                template_name = "model"
            else:
                from vlmtune.models.registry import get_family

                template_name = get_family(self._config().model_type).default_template
        self.template_name = template_name
        self.template = get_template(template_name, processor_or_tokenizer if template_name == "model" else self.tokenizer)
        self.lock = threading.Lock()  # one generation at a time on this model

    def _config(self):
        cfg = self.model.config
        return getattr(cfg, "base_model_config", None) or cfg

    @property
    def device(self):
        return next(p for p in self.model.parameters()).device

    @property
    def max_context(self) -> int | None:
        cfg = self.model.config
        text = getattr(cfg, "text_config", None) or cfg
        return getattr(text, "max_position_embeddings", None)

    # ---- prompt building

    def render(self, messages: list, images: list | None = None) -> str:
        """The prompt text for one conversation; missing `<image>` placeholders go before the first user turn."""
        messages = [as_message(m) for m in messages]
        images = images or []
        if images and not self.is_vlm:
            raise PromptError("this is a text-only model; it can't take images.")
        roles = [m.role for m in messages if m.role != "system"]
        if not roles or roles[-1] != "user":
            raise PromptError("the conversation must end with a user message.")
        bad = [r for r in roles if r not in ("user", "assistant")]
        if bad:
            raise PromptError(f"unknown role {bad[0]!r}; use system, user or assistant.")
        n = sum(m.content.count(IMAGE_PLACEHOLDER) for m in messages)
        if n > len(images):
            raise PromptError(f"the text has {n} {IMAGE_PLACEHOLDER} placeholders but only {len(images)} images were given.")
        if n < len(images):
            first = next(i for i, m in enumerate(messages) if m.role == "user")
            extra = (IMAGE_PLACEHOLDER + "\n") * (len(images) - n)
            messages[first] = Message("user", extra + messages[first].content)
        return self.template.render_prompt(messages)

    def _encode(self, prompts: list[str], images: list[list]) -> dict:
        add_special = getattr(self.template, "add_special_tokens", True)
        bos = self.tokenizer.bos_token
        if bos and all(p.startswith(bos) for p in prompts):
            add_special = False  # the template wrote its own BOS
        self.tokenizer.padding_side = "left"
        flat = [img for imgs in images for img in imgs]
        if self.is_vlm:
            image_token = getattr(self.processor, "image_token", None) or IMAGE_PLACEHOLDER
            if image_token != IMAGE_PLACEHOLDER:
                prompts = [p.replace(IMAGE_PLACEHOLDER, image_token) for p in prompts]
            kw = {"images": flat} if flat else {}
            enc = self.processor(text=prompts, return_tensors="pt", padding=True, add_special_tokens=add_special, **kw)
        else:
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special)
        out = {}
        for k, v in enc.items():
            if torch.is_tensor(v):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(self._float_dtype())
            out[k] = v
        return out

    def _float_dtype(self):
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype if p.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32
        return torch.float32

    def encode(self, conversations: list[list], images: list[list] | None = None) -> dict:
        images = images if images is not None else [[] for _ in conversations]
        if len(images) != len(conversations):
            raise PromptError(f"{len(conversations)} conversations but {len(images)} image lists.")
        prompts = [self.render(c, i) for c, i in zip(conversations, images)]
        return self._encode(prompts, images)

    def count_tokens(self, messages: list, images: list | None = None) -> int:
        """Prompt length in tokens of one conversation, image tokens expanded."""
        return int(self.encode([messages], [images or []])["input_ids"].shape[1])

    def count_text_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---- generation

    def _gen_kwargs(self, max_new_tokens, temperature, top_p, num_beams, stop) -> dict:
        if max_new_tokens < 1:
            raise PromptError("max_new_tokens must be at least 1.")
        if temperature < 0 or not 0 < top_p <= 1 or num_beams < 1:
            raise PromptError("temperature must be >= 0, top_p in (0, 1], num_beams >= 1.")
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos:
            eos.append(self.tokenizer.eos_token_id)
        for s in self.stop_strings(stop):  # single-token stops (</s>, <|im_end|>) stop generation by id
            ids = self.tokenizer(s, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and ids[0] not in eos:
                eos.append(ids[0])
        kw = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, eos_token_id=eos,
                  pad_token_id=self.tokenizer.pad_token_id)
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        user_stops = [s for s in (stop or []) if s]
        if user_stops:
            kw.update(stop_strings=user_stops, tokenizer=self.tokenizer)
        return kw

    def stop_strings(self, stop: list[str] | None = None) -> list[str]:
        return list(dict.fromkeys([*(getattr(self.template, "stop_strings", None) or []), *(s for s in (stop or []) if s)]))

    def _check_length(self, enc: dict, max_new_tokens: int) -> int:
        n = int(enc["input_ids"].shape[1])
        limit = self.max_context
        if limit and n + max_new_tokens > limit:
            raise PromptError(f"the prompt is {n} tokens and {max_new_tokens} new tokens were asked for; "
                              f"this model's context is {limit} tokens.")
        return n

    def complete(self, conversations: list[list], images: list[list] | None = None, *, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, num_beams: int = 1, stop: list[str] | None = None) -> list[Completion]:
        """Batched generation (left padding) with token counts and finish reasons."""
        enc = self.encode(conversations, images)
        n = self._check_length(enc, max_new_tokens)
        kw = self._gen_kwargs(max_new_tokens, temperature, top_p, num_beams, stop)
        with self.lock, torch.inference_mode():
            out = self.model.generate(**enc, **kw)
        new = out[:, n:]
        results = []
        for row, mask in zip(new, enc["attention_mask"]):
            ids = row.tolist()
            pad = self.tokenizer.pad_token_id
            while ids and ids[-1] == pad and pad not in kw["eos_token_id"]:
                ids.pop()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, self.stop_strings(stop))
            hit_eos = any(t in kw["eos_token_id"] for t in ids)
            finish = "stop" if stopped or hit_eos or len(ids) < max_new_tokens else "length"
            results.append(Completion(text.strip(), int(mask.sum()), len(ids), finish))
        return results

    def generate(self, conversations: list[list], images: list[list] | None = None, **kw) -> list[str]:
        """One answer per conversation. Greedy when temperature == 0."""
        return [c.text for c in self.complete(conversations, images, **kw)]

    def stream(self, messages: list, images: list | None = None, *, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, num_beams: int = 1, stop: list[str] | None = None,
               usage: dict | None = None) -> Iterator[str]:
        """Text pieces as they are generated (beam search can't stream: its answer comes in one piece).

        `usage`, when given, is filled with prompt_tokens, completion_tokens and finish_reason at the end."""
        if num_beams > 1:
            c = self.complete([messages], [images or []], max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p, num_beams=num_beams, stop=stop)[0]
            if usage is not None:
                usage.update(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, finish_reason=c.finish_reason)
            yield c.text
            return
        from transformers import StoppingCriteriaList

        enc = self.encode([messages], [images or []])
        self._check_length(enc, max_new_tokens)
        kw = self._gen_kwargs(max_new_tokens, temperature, top_p, num_beams, stop)
        cancel = threading.Event()  # set when the reader stops early (a stop string, a closed connection)
        kw["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancel)])
        streamer = _CountingStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        errors: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    self.model.generate(**enc, **kw, streamer=streamer)
            except BaseException as e:  # surfaced in the caller's thread
                errors.append(e)
                streamer.end()

        stops = self.stop_strings(stop)
        hold = max((len(s) for s in stops), default=1) - 1
        with self.lock:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            sent, text, stopped = 0, "", False
            try:
                for piece in streamer:
                    text += piece
                    if not sent:
                        text = text.lstrip()
                    cut, stopped = cut_at_stop(text, stops)
                    if stopped:
                        if len(cut) > sent:
                            yield cut[sent:]
                        break
                    safe = len(text) - hold
                    if safe > sent:
                        yield text[sent:safe]
                        sent = safe
                else:
                    if len(text) > sent:
                        yield text[sent:]
            finally:
                cancel.set()
                thread.join()
        if errors:
            raise errors[0]
        if usage is not None:
            usage.update(prompt_tokens=int(enc["input_ids"].shape[1]), completion_tokens=streamer.generated,
                         finish_reason="stop" if stopped or streamer.generated < max_new_tokens else "length")


def _counting_streamer_class():
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        """TextIteratorStreamer that also counts the generated tokens."""

        generated = 0
        _prompt_seen = False

        def put(self, value):
            if self._prompt_seen:
                self.generated += int(value.numel() if value.dim() < 2 else value.shape[-1])
            self._prompt_seen = True
            super().put(value)

    return CountingStreamer


def _CountingStreamer(*args, **kw):
    return _counting_streamer_class()(*args, **kw)


class _Cancelled:
    """A stopping criterion that ends generation once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kw):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
