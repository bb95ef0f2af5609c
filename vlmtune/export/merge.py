"""Merge a LoRA run/adapter into its base and write a standard Hugging Face model folder.

    result = merge_run("runs/my", "merged/", verify=True)   # MergeResult(out, max_diff, tolerance, ok, notes)

Steps, in the order they run: find the adapter and its base (by folder contents, never names) →
load the base in its own dtype (QLoRA/8-bit: the weights the adapter trained against, i.e. the
base quantized and dequantized again) → check every piece is there and fits → apply the adapter →
(verify: logits on a probe image + prompt) → `merge_and_unload` → (verify: logits again) → save
safetensors + config + processor + chat template + generation config + README into a temp folder,
then rename it into place, so a half-written folder never appears under the output name.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlmtune.errors import ModelLoadError, VlmtuneError
from vlmtune.inference import ChatModel, apply_adapter, check_adapter_files, load_base_model, resolve_source

DEFAULT_TOLERANCE = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 1e-1}
PROBE_PROMPT = "Describe the image in detail."


@dataclass
class MergeResult:
    out: Path
    dtype: str
    max_diff: float | None = None
    tolerance: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_diff is None or self.max_diff <= self.tolerance


def _check_base_exists(base: str, named_in: str) -> None:
    looks_local = os.path.isabs(base) or base.startswith((".", "~")) or base.count("/") != 1
    if looks_local and not Path(base).expanduser().exists():
        raise ModelLoadError(f"the base model {base} (named in {named_in}) does not exist. Restore it, or pass "
                             "the adapter with the base it was trained on.")


def _run_config(adapter: Path) -> dict:
    """The run's config.yaml (beside final/), if there is one."""
    import yaml

    for cand in (adapter.parent / "config.yaml", adapter.parent.parent / "config.yaml"):
        if cand.is_file():
            try:
                return yaml.safe_load(cand.read_text()) or {}
            except yaml.YAMLError:
                return {}
    return {}


def _check_projector(adapter: Path, family) -> None:
    """A VLM whose projector was trained must find the projector weights inside the adapter."""
    if family.kind != "vlm" or not family.projector:
        return
    from safetensors import safe_open

    names = [p.split(".")[-1] for p in family.projector]
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    if any(f".{n}." in k for k in keys for n in names):
        return
    acfg = json.loads((adapter / "adapter_config.json").read_text())
    listed = any(n in (acfg.get("modules_to_save") or []) for n in names)
    trained = str((_run_config(adapter).get("model") or {}).get("projector", "")) in ("full", "lora")
    if listed or trained:
        raise ModelLoadError(f"the adapter {adapter} has no projector weights ({'/'.join(names)}), but the run trained "
                             "the projector; the merged model would have an untrained projector. Merge from the run's "
                             "final/ folder, which carries the projector in modules_to_save.")


def _dequantized(model, family, quantization: str) -> int:
    """Replace LLM linear weights by what 4-bit NF4 / 8-bit quantization made of them during training."""
    n = 0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or family.component_of(name) != "llm" or name.split(".")[-1] == "lm_head":
            continue
        with torch.no_grad():
            w = mod.weight
            if quantization == "4bit":
                import bitsandbytes.functional as bnbf

                q, state = bnbf.quantize_4bit(w.data.to(torch.bfloat16), blocksize=64, compress_statistics=True, quant_type="nf4")
                w.copy_(bnbf.dequantize_4bit(q, state).to(w.dtype))
            else:  # LLM.int8 weights: row-wise absmax int8
                scale = w.data.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
                w.copy_((torch.round(w.data.float() / scale).clamp(-127, 127) * scale).to(w.dtype))
        n += 1
    return n


def probe_inputs(chat: ChatModel) -> dict:
    """A fixed image (a colour gradient at the processor's size) and prompt, encoded for `chat.model`."""
    from vlmtune.data.sample import Message

    images = []
    if chat.is_vlm:
        from PIL import Image

        side = 64
        ip = getattr(chat.processor, "image_processor", None)
        crop = getattr(ip, "crop_size", None) or getattr(ip, "size", None) or {}
        crop = dict(crop) if not isinstance(crop, int) else {"height": crop}
        side = int(crop.get("height") or crop.get("shortest_edge") or side)
        xs = torch.linspace(0, 255, side)
        arr = torch.stack([xs[None, :].expand(side, side), xs[:, None].expand(side, side),
                           (255 - xs)[None, :].expand(side, side)], dim=-1)
        images = [Image.fromarray(arr.to(torch.uint8).numpy(), "RGB")]
    return chat.encode([[Message("user", PROBE_PROMPT)]], [images])


def _logits(model, enc: dict) -> torch.Tensor:
    with torch.inference_mode():
        return model(**enc).logits.float().cpu()


def merge_run(source: str, out: str, *, verify: bool = False, tolerance: float | None = None, overwrite: bool = False,
              trust_remote_code: bool = False, log=print) -> MergeResult:
    """Merge RUN/final (or an adapter folder) into its base and write an HF folder at `out`."""
    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()) and not overwrite:
        raise VlmtuneError(f"{out} exists and is not empty; pass --overwrite to replace it.")
    src = resolve_source(source)
    if src.adapter is None:
        return _copy_full_model(src.base, out_path, overwrite, log)
    adapter = Path(src.adapter)
    check_adapter_files(str(adapter))
    _check_base_exists(src.base, str(adapter / "vlmtune_run.json") if (adapter / "vlmtune_run.json").is_file()
                       else str(adapter / "adapter_config.json"))

    model, processor, family = load_base_model(src.base, trust_remote_code=trust_remote_code, device="cpu")
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    notes: list[str] = []
    if src.quantization in ("4bit", "8bit"):
        n = _dequantized(model, family, src.quantization)
        notes.append(f"The adapter was trained against a {src.quantization} quantized base (QLoRA). It was merged into the "
                     f"dequantized base ({n} LLM linear layers quantized and dequantized again, kept in {str(dtype).split('.')[-1]}), "
                     "so the merged model matches what was trained; it differs slightly from the original full-precision base.")
        log(f"note: {notes[-1]}")
    if src.processor_from:
        from vlmtune.inference import _load_processor

        processor = _load_processor(src.processor_from, family, trust_remote_code) or processor
    _check_projector(adapter, family)
    peft_model = apply_adapter(model, str(adapter))

    chat = ChatModel(peft_model, processor, src.template)
    before = None
    if verify:
        enc = probe_inputs(chat)
        before = _logits(peft_model, enc)
    merged = peft_model.merge_and_unload()
    merged.eval()
    result = MergeResult(out_path, str(dtype).split(".")[-1], notes=notes)
    if verify:
        after = _logits(merged, enc)
        result.max_diff = float((after - before).abs().max())
        result.tolerance = tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(dtype, 1e-3)
        log(f"verify: largest |merged - unmerged| logit difference = {result.max_diff:.3g} "
            f"(tolerance {result.tolerance:g}) over {before.numel()} logits")
        if not result.ok:
            log("verify: FAILED; nothing was written.")
            return result

    _set_chat_template(processor, src.template)
    _write_atomically(out_path, overwrite, lambda tmp: _save(merged, processor, tmp, src, result, family))
    log(f"merged model written to {out_path}")
    return result


def _set_chat_template(processor, template: str | None) -> None:
    """The saved folder renders prompts the way the model was trained (vlmtune's named templates as jinja)."""
    from vlmtune.models.chat_templates import chat_template_for

    jinja = chat_template_for(template) if template else None
    if jinja:
        processor.chat_template = jinja
        tok = getattr(processor, "tokenizer", None)
        if tok is not None and not getattr(tok, "chat_template", None):
            tok.chat_template = jinja


def _save(merged, processor, tmp: Path, src, result: MergeResult, family) -> None:
    merged.config.dtype = result.dtype
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(merged.config, attr):
            delattr(merged.config, attr)
    merged.save_pretrained(tmp, max_shard_size="4GB")
    processor.save_pretrained(tmp)
    if not (tmp / "generation_config.json").is_file():
        merged.generation_config.save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(src, result, family, merged))


def model_card(src, result: MergeResult, family, merged) -> str:
    auto = "AutoModelForImageTextToText" if family.kind == "vlm" else "AutoModelForCausalLM"
    proc = "AutoProcessor" if family.kind == "vlm" else "AutoTokenizer"
    verified = ("not run" if result.max_diff is None else
                f"largest logit difference merged vs. unmerged {result.max_diff:.3g} (tolerance {result.tolerance:g})")
    notes = "".join(f"- {n}\n" for n in result.notes)
    return f"""---
library_name: transformers
base_model: {src.base}
tags: [vlmtune, merged-lora]
---
# Merged model

Made by `vlmtune merge` on {datetime.date.today().isoformat()}: the peft LoRA adapter
`{src.adapter}` (with its trained non-LoRA modules, such as the projector) merged into the base
model `{src.base}` with peft's `merge_and_unload`, saved in {result.dtype} as safetensors.

- architecture: `{type(merged).__name__}` (`model_type: {merged.config.model_type}`)
- chat template: `{src.template or 'the base processor template'}` (stored in `chat_template.jinja`)
- adapter trained against a quantized base: {src.quantization or 'no'}
- verification: {verified}
{notes}
## Use with stock transformers

```python
from transformers import {auto}, {proc}
model = {auto}.from_pretrained("{result.out.name}")
processor = {proc}.from_pretrained("{result.out.name}")
```

Or: `vlmtune chat {result.out.name} --image photo.jpg --prompt "What is this?"`
"""


def _write_atomically(out: Path, overwrite: bool, write) -> None:
    """Write into a temp folder beside `out`, then rename it into place."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            if not overwrite and any(out.iterdir()):
                raise VlmtuneError(f"{out} appeared while merging; not replacing it (pass --overwrite).")
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _copy_full_model(path: str, out: Path, overwrite: bool, log) -> MergeResult:
    """A full fine-tune has nothing to merge: copy its folder (safetensors only) under the output name."""
    src = Path(path)
    if not src.is_dir():
        raise VlmtuneError(f"{path} is neither a run folder nor an adapter; nothing to merge.")
    if any(src.glob("*.bin")) and not any(src.glob("*.safetensors")):
        raise ModelLoadError(f"{path} holds only pickled .bin weights; vlmtune reads and writes safetensors only.")
    log(f"{path} is a full model (no adapter); copying it as is.")

    def write(tmp: Path) -> None:
        for f in src.iterdir():
            if f.is_file() and f.suffix != ".bin":
                shutil.copy2(f, tmp / f.name)

    _write_atomically(out, overwrite, write)
    return MergeResult(out, "as saved")
