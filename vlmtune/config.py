"""The one typed config. YAML keys, dotted CLI overrides and dataclass fields are the same names.

    cfg = load_config("my.yaml", ["train.lr=1e-4", "data.path=data.json"])

Every field has a help string; `validate()` rejects bad combinations before any weights load,
naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from vlmtune.errors import ConfigError

TRAIN_MODES = ("frozen", "lora", "full")


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    path: str | None = _f(None, "An existing HF VLM or text-only LLM (hub id or local folder). Leave empty to compose one.")
    vision_encoder: str | None = _f(None, "Compose: CLIP or SigLIP vision checkpoint (hub id or folder).")
    language_model: str | None = _f(None, "Compose: any causal LLM checkpoint (hub id or folder).")
    projector_type: str = _f("mlp2x_gelu", "Compose: `mlp2x_gelu` (LLaVA-1.5) or `linear` (LLaVA-1).")
    vision_feature_layer: int = _f(-2, "Compose: which vision hidden layer feeds the projector (LLaVA: -2).")
    vision_feature_select_strategy: str = _f("default", "`default` drops CLS as LLaVA does; `full` keeps it.")
    projector_from: str | None = _f(None, "Load projector weights from a stage-1 run (RUN/final) or a safetensors file.")
    vision: str = _f("frozen", "Vision tower: frozen, lora or full.")
    projector: str = _f("full", "Projector: frozen, lora or full.")
    llm: str = _f("lora", "Language model: frozen, lora or full.")
    quantization: str | None = _f(None, "`4bit` (QLoRA: NF4, double quant, bf16 compute) or `8bit` for the LLM; null for none.")
    attn_implementation: str | None = _f(None, "Passed to transformers (`sdpa`, `eager`, `flash_attention_2`); null = its default.")
    trust_remote_code: bool = _f(False, "Run model code from the hub. Only when you trust the repository.")


@dataclass
class DataConfig:
    path: Any = _f(None, "Training data: a .json/.jsonl/.parquet file or a list of them.")
    image_folder: str | None = _f(None, "Folder that image paths in the data are relative to (paths must stay inside).")
    eval_path: Any = _f(None, "Held-out data for eval loss (same formats as data.path).")
    template: str = _f("vicuna_v1", "vicuna_v1, plain, internlm2_chat, chatml, llama3, raw, or `model` (the tokenizer's own).")
    max_length: int = _f(2048, "Longest sample in tokens, counting each image's expanded tokens.")
    overlong: str = _f("skip", "`skip` a sample over max_length (reported), or `truncate` whole turns from the end.")
    image_aspect_ratio: str = _f("pad", "`pad` (LLaVA: square with the processor's mean colour), `resize`, or `processor`.")
    allow_urls: bool = _f(False, "Allow http(s) image URLs in data (refused by default).")
    max_bad_fraction: float = _f(0.01, "Stop training when more than this fraction of samples turn out bad.")
    strict: bool = _f(False, "Stop training at the first bad sample.")
    num_workers: int = _f(0, "DataLoader worker processes.")


@dataclass
class TrainConfig:
    epochs: float = _f(1, "Passes over the data (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Optimizer steps to run; -1 means use epochs.")
    batch_size: int = _f(4, "Samples per device per micro-step.")
    grad_accum: int = _f(1, "Micro-steps per optimizer step.")
    lr: float | None = _f(None, "Learning rate of the LLM (and of anything without its own). null: 1e-3 for projector "
                                "pretraining (only the projector trains, as LLaVA's stage 1), else 2e-4.")
    projector_lr: float | None = _f(None, "Learning rate of the projector (null: train.lr).")
    vision_lr: float | None = _f(None, "Learning rate of the vision tower (null: train.lr).")
    warmup_ratio: float = _f(0.03, "Fraction of steps with linear warm-up before the cosine decay.")
    weight_decay: float = _f(0.0, "AdamW weight decay (never applied to norms and biases).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = off).")
    save_steps: int = _f(500, "Save a checkpoint every N optimizer steps (0 = only at the end).")
    save_total_limit: int = _f(2, "Keep this many newest checkpoints (0 = all).")
    seed: int = _f(42, "Seed for weights, data order and dropout.")
    precision: str = _f("auto", "bf16, fp16, fp32, or auto (bf16 on a GPU that has it, else fp32).")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")
    log_steps: int = _f(1, "Log every N optimizer steps.")
    eval_steps: int = _f(0, "Eval loss on data.eval_path every N steps (0 = only at the end).")
    max_nonfinite: int = _f(5, "Stop after this many non-finite updates in a row.")
    report_to: Any = _f(["tensorboard"], "Loggers: tensorboard, wandb, or none.")
    allow_data_change: bool = _f(False, "Resume even if the data fingerprint changed.")
    progress: bool = _f(True, "Show a progress bar.")


@dataclass
class LoraConfig:
    r: int = _f(16, "LoRA rank (lora_r).")
    alpha: int = _f(32, "LoRA alpha (lora_alpha).")
    dropout: float = _f(0.05, "LoRA dropout.")
    bias: str = _f("none", "none, all or lora_only (peft's).")
    target_modules: Any = _f(None, "null = every linear layer in the LoRA'd parts; a list of names; or a regex string.")


@dataclass
class EvalConfig:
    benchmark: str | None = _f(None, "During training: mmbench, scienceqa or vqa.")
    data: str | None = _f(None, "During training: the benchmark file.")
    image_folder: str | None = _f(None, "Image folder for vqa/scienceqa files.")
    every_steps: int = _f(0, "Run the benchmark every N steps (0 = off).")
    limit: int | None = _f(None, "Only the first N questions.")
    samples: Any = _f([], "A list of {image, question} answered and logged every eval.every_steps.")
    max_new_tokens: int = _f(32, "Generation length during evaluation.")
    batch_size: int = _f(8, "Generation batch size.")


@dataclass
class Config:
    output_dir: str = _f("runs/run", "The run folder.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> "Config":
        validate(self)
        return self


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "lora": LoraConfig, "eval": EvalConfig}


def known_keys() -> list[str]:
    keys = ["output_dir"]
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.5)
    if not close and "." in key:  # a right field name under the wrong section
        leaf = key.split(".", 1)[1]
        close = [k for k in known_keys() if k.endswith("." + leaf)][:1]
    return f" Did you mean `{close[0]}`?" if close else ""


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check a YAML value against the field's annotation (ints may stand for floats)."""
    if value is None or hint is Any:
        return value
    origin = get_origin(hint)
    options = get_args(hint) if origin in (Union, getattr(__import__("types"), "UnionType", Union)) else (hint,)
    for opt in options:
        if opt is type(None):
            continue
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if opt is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is bool and isinstance(value, bool):
            return value
        if opt is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"config field `{key}` must be {names}, got {value!r}.")


def from_dict(raw: dict) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a YAML mapping of sections (model, data, train, lora, eval).")
    cfg = Config()
    for top, value in raw.items():
        if top == "output_dir":
            cfg.output_dir = _coerce("output_dir", value, str)
            continue
        if top not in SECTIONS:
            raise ConfigError(f"unknown config key `{top}`.{_suggest(top)}")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"config section `{top}` must be a mapping, got {value!r}.")
        section = getattr(cfg, top)
        hints = get_type_hints(type(section))
        for key, v in value.items():
            full = f"{top}.{key}"
            if key not in hints:
                raise ConfigError(f"unknown config key `{full}`.{_suggest(full)}")
            setattr(section, key, _coerce(full, v, hints[key]))
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override `{item}` is not `section.key=value` (e.g. train.lr=1e-4).")
        key, text = item.split("=", 1)
        key = key.strip().lstrip("-")
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            value = text
        if key != "output_dir" and key not in known_keys():
            raise ConfigError(f"unknown config key `{key}`.{_suggest(key)}")
        if key == "output_dir":
            raw["output_dir"] = value
        else:
            section, leaf = key.split(".", 1)
            if not isinstance(raw.get(section), dict):
                raw[section] = {}
            raw[section][leaf] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist.")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    return raw


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    raw = read_yaml(path) if path is not None else {}
    return from_dict(apply_overrides(raw, list(overrides))).validate()


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    m, d, t, lo = cfg.model, cfg.data, cfg.train, cfg.lora
    for part in ("vision", "projector", "llm"):
        value = getattr(m, part)
        _need(value in TRAIN_MODES, f"`model.{part}` must be one of {', '.join(TRAIN_MODES)}, got {value!r}.")
    _need(m.projector_type in ("mlp2x_gelu", "linear"), f"`model.projector_type` must be mlp2x_gelu or linear, got {m.projector_type!r}.")
    _need(m.vision_feature_select_strategy in ("default", "full"), "`model.vision_feature_select_strategy` must be default or full.")
    _need(m.quantization in (None, "4bit", "8bit"), f"`model.quantization` must be 4bit, 8bit or null, got {m.quantization!r}.")
    if m.quantization:
        _need(m.llm != "full", f"`model.quantization: {m.quantization}` (QLoRA) can't train a quantized LLM fully: set `model.llm: lora` (or frozen), or `model.quantization: null` for a full fine-tune.")
    _need(m.path is not None or (m.vision_encoder and m.language_model),
          "no model: set `model.path` (an existing VLM or LLM), or both `model.vision_encoder` and `model.language_model` to compose one.")
    _need(not (m.path and (m.vision_encoder or m.language_model)),
          "set either `model.path` or `model.vision_encoder` + `model.language_model`, not both.")
    _need(any(getattr(m, p) != "frozen" for p in ("vision", "projector", "llm")),
          "everything is frozen: set at least one of `model.vision`, `model.projector`, `model.llm` to lora or full.")
    from vlmtune.data.templates import TEMPLATE_NAMES  # the data layer owns the list; imported lazily

    _need(d.template in TEMPLATE_NAMES, f"`data.template` must be one of {', '.join(TEMPLATE_NAMES)}, got {d.template!r}.")
    _need(d.overlong in ("skip", "truncate"), f"`data.overlong` must be skip or truncate, got {d.overlong!r}.")
    _need(d.image_aspect_ratio in ("pad", "resize", "processor"), "`data.image_aspect_ratio` must be pad, resize or processor.")
    _need(d.max_length > 0, "`data.max_length` must be positive.")
    _need(0 <= d.max_bad_fraction <= 1, "`data.max_bad_fraction` must be between 0 and 1.")
    _need(t.precision in ("auto", "bf16", "fp16", "fp32"), f"`train.precision` must be auto, bf16, fp16 or fp32, got {t.precision!r}.")
    _need(t.batch_size >= 1 and t.grad_accum >= 1, "`train.batch_size` and `train.grad_accum` must be at least 1.")
    if t.lr is None:  # resolved here, so config.yaml in the run folder records the value used
        stage1 = m.projector == "full" and m.vision == "frozen" and m.llm == "frozen"
        t.lr = 1e-3 if stage1 else 2e-4
    _need(t.lr > 0, "`train.lr` must be positive.")
    _need(t.max_steps > 0 or t.epochs > 0, "set `train.max_steps` or `train.epochs` above 0.")
    _need(0 <= t.warmup_ratio < 1, "`train.warmup_ratio` must be in [0, 1).")
    _need(lo.r >= 1, "`lora.r` must be at least 1.")
    _need(lo.bias in ("none", "all", "lora_only"), "`lora.bias` must be none, all or lora_only.")
    reports = [t.report_to] if isinstance(t.report_to, str) else list(t.report_to or [])
    for r in reports:
        _need(r in ("tensorboard", "wandb", "none"), f"`train.report_to` entries must be tensorboard, wandb or none, got {r!r}.")
    if cfg.eval.every_steps:
        _need(cfg.eval.benchmark in ("mmbench", "scienceqa", "vqa") or cfg.eval.samples,
              "`eval.every_steps` is set but there is nothing to run: set `eval.benchmark` + `eval.data`, or `eval.samples`.")
