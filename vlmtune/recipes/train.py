"""Train a VLM or LLM from one YAML config with dotted overrides.

    vlmtune train my.yaml data.path=data.json train.lr=1e-4
    vlmtune train my.yaml --nproc 2 --deepspeed zero2       # or zero3, zero3_offload, FILE.json, --fsdp
    vlmtune train runs/my                                   # resume a run folder from its newest checkpoint

Started again on a run folder with a complete checkpoint, it resumes from the newest one and says so.
SIGINT/SIGTERM save a checkpoint, then exit. Reads top to bottom: setup, train, save.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch

from vlmtune.config import Config, load_config
from vlmtune.errors import VlmtuneError
from vlmtune.training.checkpoint import complete_checkpoints, load_checkpoint, save_checkpoint, set_rng_state
from vlmtune.training.metrics import MetricsLogger, plot_loss
from vlmtune.training.sampler import StepSampler


def add_arguments(p) -> None:
    p.add_argument("config", help="YAML config, a shipped recipe name (see `vlmtune configs list`), or a run folder to resume")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=1e-4")
    p.add_argument("--nproc", type=int, default=1, help="start N local processes (torch.distributed.run)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--deepspeed", metavar="PRESET|FILE", help="zero2, zero3, zero3_offload or a DeepSpeed JSON")
    g.add_argument("--fsdp", action="store_true", help="shard with PyTorch FSDP (through accelerate)")


def run(args) -> int:
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        from vlmtune.training.distributed import launch

        argv = [a for a in sys.argv[1:]]
        i = argv.index("--nproc") if "--nproc" in argv else None
        argv = argv[:i] + argv[i + 2:] if i is not None else [a for a in argv if not a.startswith("--nproc=")]
        return launch(args.nproc, argv)
    cfg = resolve_config(args.config, args.overrides)
    return train(cfg, deepspeed=args.deepspeed, fsdp=args.fsdp)


def resolve_config(path: str, overrides: list[str]) -> Config:
    p = Path(path)
    if p.is_dir():
        if not (p / "config.yaml").is_file():
            raise VlmtuneError(f"{p} is a folder without config.yaml: pass a YAML config or a run folder.")
        cfg = load_config(p / "config.yaml", overrides)
        cfg.output_dir = str(p)  # the run folder is where it is, wherever it was first written
        return cfg
    if not p.exists() and not path.endswith((".yaml", ".yml")):
        # A shipped recipe by name, e.g. `vlmtune train llava-1.5/7b_lora data.path=...`.
        from vlmtune.config import apply_overrides, from_dict
        from vlmtune.configs import read_text
        import yaml

        return from_dict(apply_overrides(yaml.safe_load(read_text(path)) or {}, list(overrides))).validate()
    return load_config(p, overrides)


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not torch.cuda.is_available():
        raise VlmtuneError("`train.precision: fp16` needs a CUDA GPU; use bf16 or fp32 on a CPU.")
    return precision


def _check_data_files(cfg: Config) -> None:
    """Missing data files fail here, before any weights load, naming the field."""
    for key in ("path", "eval_path"):
        value = getattr(cfg.data, key)
        for path in [] if value is None else [value] if isinstance(value, (str, os.PathLike)) else list(value):
            if not Path(path).is_file():
                raise VlmtuneError(f"`data.{key}`: data file {path} does not exist.")


def data_fingerprint(paths) -> str:
    """sha256 over the data files' bytes (names excluded, so a moved file still matches)."""
    h = hashlib.sha256()
    for path in [paths] if isinstance(paths, str) else list(paths):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def train(cfg: Config, *, deepspeed: str | None = None, fsdp: bool = False) -> int:
    from vlmtune.data.dataset import BadSampleTracker, SupervisedDataset, collate
    from vlmtune.data.readers import load_samples
    from vlmtune.data.templates import get_template
    from vlmtune.models.adapters import apply_training_modes, param_groups, parameter_table
    from vlmtune.models.load import load_model_for_training
    from vlmtune.training.distributed import build_accelerator
    from vlmtune.training.loop import Progress, StopFlag, micro_step_loss, run_eval_loss
    from transformers import get_cosine_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.data.path is None:
        raise VlmtuneError("no training data: set `data.path` (e.g. `vlmtune train my.yaml data.path=data.json`).")
    _check_data_files(cfg)
    if cfg.eval.every_steps:  # a bad benchmark file fails now, not hours in
        from vlmtune.evaluation.during_training import check_eval_config

        check_eval_config(cfg.eval)

    # ---- Setup: run folder, processes, data, model, optimizer --------------------------------------------
    run_dir = Path(cfg.output_dir)
    precision = resolve_precision(cfg.train.precision)
    accelerator = build_accelerator(cfg.train, precision, deepspeed=deepspeed, fsdp=fsdp)
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    say = print if main else (lambda *a, **k: None)
    torch.manual_seed(cfg.train.seed)

    resume = (complete_checkpoints(run_dir) or [None])[-1]
    fingerprint = data_fingerprint(cfg.data.path)
    state = load_checkpoint(resume) if resume else None
    if state is not None:
        say(f"Resuming from {resume} (step {state['trainer_state']['step']}).")
        old = state["trainer_state"].get("data_fingerprint")
        if old != fingerprint and not cfg.train.allow_data_change:
            raise VlmtuneError(f"the data changed since {resume} was saved (fingerprint {old} -> {fingerprint}). "
                               "Resuming would not repeat the run. Pass train.allow_data_change=true to resume anyway, "
                               "or choose a new output_dir.")
    if state is None and (run_dir / "metrics.jsonl").exists():
        say(f"note: {run_dir} holds an earlier run but no complete checkpoint to resume; starting again from step 0.")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if state is None:
            for stale in ("metrics.jsonl", "skipped.jsonl", "eval_samples.jsonl"):
                (run_dir / stale).unlink(missing_ok=True)
        _write_atomic(run_dir / "config.yaml", cfg.to_yaml())

    samples, load_problems = load_samples(cfg.data.path)
    tracker = BadSampleTracker(cfg.data.max_bad_fraction, cfg.data.strict, run_dir / "skipped.jsonl" if main else None,
                               total=len(samples) + len(load_problems))
    if load_problems and state is None:
        say(f"{len(load_problems)} record(s) can't be used (see skipped.jsonl; `vlmtune data check` explains them).")
        tracker.record(load_problems, seen=len(samples) + len(load_problems))

    dtype = _load_dtype(cfg, precision, deepspeed)
    loaded = load_model_for_training(cfg.model, template=cfg.data.template, dtype=dtype)
    base_path = _base_for(cfg, loaded, run_dir, main)
    model = apply_training_modes(loaded.model, loaded.family, cfg, gradient_checkpointing=cfg.train.gradient_checkpointing)
    say(parameter_table(model, loaded.family))
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]

    template = get_template(cfg.data.template, loaded.tokenizer)
    dataset = SupervisedDataset(samples, tokenizer=loaded.tokenizer, template=template,
                                image_processor=loaded.image_processor, image_folder=cfg.data.image_folder,
                                image_seq_len=loaded.image_seq_len, image_token=loaded.image_token or "<image>",
                                max_length=cfg.data.max_length, overlong=cfg.data.overlong,
                                image_aspect_ratio=cfg.data.image_aspect_ratio, allow_urls=cfg.data.allow_urls)
    sampler = StepSampler(len(dataset), cfg.train.batch_size, cfg.train.grad_accum, world, rank, cfg.train.seed)
    total_steps = cfg.train.max_steps if cfg.train.max_steps > 0 else max(1, math.ceil(cfg.train.epochs * sampler.steps_per_epoch))
    if sampler.dropped:
        say(f"note: {sampler.dropped} sample(s) per epoch don't fill a global batch of {sampler.global_batch} and are left out of that epoch.")

    groups = param_groups(model, loaded.family, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)
    start_step = 0
    if state is not None:
        missing = [n for n in trainable_names if n not in state["weights"]]
        if missing:
            raise VlmtuneError(f"{resume} does not match this config: it lacks trainable weights such as {missing[0]}.")
        model.load_state_dict(state["weights"], strict=False)
        if "optimizer_state" in state and not deepspeed:
            optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["trainer_state"]["scheduler"])
        start_step = state["trainer_state"]["step"]
        saved_batch = state["trainer_state"].get("global_batch")
        if saved_batch and saved_batch != sampler.global_batch:
            say(f"warning: {resume} was saved with a global batch of {saved_batch}, this run has {sampler.global_batch} "
                "(batch_size x grad_accum x processes); the data order from here on differs from the original run.")
        tracker.count = state["trainer_state"].get("skipped", 0)

    model, optimizer = accelerator.prepare(model, optimizer)
    if state is not None:
        if deepspeed and (resume / "engine").is_dir():
            accelerator.load_state(str(resume / "engine"))
        set_rng_state(state["rng_tensors"], state["trainer_state"]["rng"])

    logger = MetricsLogger(run_dir, cfg.train.report_to, enabled=main, run_name=run_dir.name, config=cfg.to_dict())
    eval_set = None
    if cfg.data.eval_path:
        eval_samples, _ = load_samples(cfg.data.eval_path)
        eval_set = SupervisedDataset(eval_samples, **{k: getattr(dataset, k) for k in (
            "tokenizer", "template", "image_processor", "image_folder", "image_seq_len", "image_token", "max_length",
            "overlong", "image_aspect_ratio", "allow_urls")})
    pad_id = loaded.tokenizer.pad_token_id
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler.batches(start_step, total_steps),
                                         collate_fn=partial(collate, pad_token_id=pad_id),
                                         num_workers=cfg.data.num_workers, generator=torch.Generator())

    # ---- Train ----------------------------------------------------------------------------------------------
    stop = StopFlag.install()
    nonfinite, step, last_ckpt = 0, start_step, resume
    seen = start_step * sampler.global_batch
    progress = Progress(main and cfg.train.progress, start_step, total_steps, main=main)
    micro_batches = iter(loader)
    model.train()

    def checkpoint(at_step: int) -> Path:
        """Collective: every rank gathers; rank 0 writes. A checkpoint is also a usable adapter folder."""
        weights = _gather_trainable(accelerator, model, trainable_names)
        engine = run_dir / "checkpoints" / f".engine-step-{at_step}"
        if deepspeed:  # DeepSpeed keeps its optimizer partitions in its own format
            accelerator.save_state(str(engine))
        if main:
            trainer_state = {"step": at_step, "epoch": at_step // sampler.steps_per_epoch, "total_steps": total_steps,
                             "scheduler": scheduler.state_dict(), "data_fingerprint": fingerprint,
                             "skipped": tracker.count, "world_size": world, "global_batch": sampler.global_batch}

            def extra(folder: Path) -> None:
                if deepspeed:
                    os.replace(engine, folder / "engine")
                unwrapped = accelerator.unwrap_model(model)
                if hasattr(unwrapped, "peft_config"):  # so chat/merge/eval take a checkpoint like RUN/final
                    _export_weights(cfg, unwrapped, loaded, weights, folder, base_path)

            save_checkpoint(run_dir, at_step, weights=weights,
                            optimizer_state=None if deepspeed else optimizer.state_dict(),
                            trainer_state=trainer_state, config_yaml=cfg.to_yaml(),
                            keep=cfg.train.save_total_limit, protect=resume, extra=extra)
        accelerator.wait_for_everyone()
        return run_dir / "checkpoints" / f"step-{at_step}"

    exit_code = 0
    try:
        while step < total_steps:
            t0 = time.perf_counter()
            batches = [next(micro_batches) for _ in range(cfg.train.grad_accum)]
            skipped = [s for b in batches for s in b["skipped"]]
            seen += sampler.global_batch
            tracker.record(_all_gather_objects(accelerator, skipped), seen=seen)
            n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches if b["num_samples"])
            n_tokens_global = int(accelerator.reduce(torch.tensor(n_tokens, device=accelerator.device), "sum"))
            loss_sum = torch.zeros((), device=accelerator.device)
            for b in batches:
                with accelerator.accumulate(model):
                    loss, token_loss_sum = micro_step_loss(model, b, accelerator, n_tokens_global, world, cfg.train.grad_accum)
                    accelerator.backward(loss)
                    loss_sum += token_loss_sum
            loss_value = float(accelerator.reduce(loss_sum, "sum")) / max(n_tokens_global, 1)
            grad_norm = None
            if cfg.train.max_grad_norm and accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.max_grad_norm)
            grad_norm = float(grad_norm) if grad_norm is not None else _ds_grad_norm(model)
            finite = math.isfinite(loss_value) and (grad_norm is None or math.isfinite(grad_norm))
            if n_tokens_global == 0:
                finite = True  # nothing to learn from: no update, no NaN
            if finite and n_tokens_global > 0:
                optimizer.step()
                nonfinite = 0
            else:
                if n_tokens_global > 0:
                    nonfinite += 1
                    say(f"step {step + 1}: non-finite loss/grad norm ({loss_value}, {grad_norm}); update skipped "
                        f"({nonfinite} in a row)")
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            dt = time.perf_counter() - t0
            row = {"loss": loss_value if n_tokens_global else None, "lr": scheduler.get_last_lr()[0],
                   "grad_norm": grad_norm, "samples_per_s": sampler.global_batch / dt, "trained_tokens": n_tokens_global}
            if not finite:
                row["skipped_update"] = True
            if step % cfg.train.log_steps == 0 or step == total_steps:
                logger.log(step, row)
            progress.update(row)
            if nonfinite >= cfg.train.max_nonfinite:
                raise VlmtuneError(f"{nonfinite} non-finite updates in a row at step {step}; stopping. "
                                   f"The last complete checkpoint ({last_ckpt or 'none'}) is intact. Try a lower train.lr, "
                                   "train.precision: bf16/fp32, or check the data.")
            if eval_set is not None and cfg.train.eval_steps and step % cfg.train.eval_steps == 0:
                eval_loss = run_eval_loss(model, eval_set, accelerator, pad_id, cfg.train.batch_size)
                logger.log(step, {"eval_loss": eval_loss})
                progress.show({"eval_loss": eval_loss})
            if cfg.eval.every_steps and step % cfg.eval.every_steps == 0:
                _eval_during_training(cfg, model, loaded, accelerator, step, run_dir, logger, progress)
            if cfg.train.save_steps and step % cfg.train.save_steps == 0 and step < total_steps:
                last_ckpt = checkpoint(step)
            if stop.requested(accelerator):
                say(f"\nStopping on {stop.name}: saving a checkpoint at step {step}.")
                last_ckpt = checkpoint(step)
                say(f"Saved {last_ckpt}. Run `vlmtune train {run_dir}` to resume.")
                exit_code = 130 if stop.name == "SIGINT" else 143
                return exit_code
    finally:
        progress.close()
        stop.uninstall()
        logger.close()
        if main:
            plot_loss(run_dir)

    # ---- Save ---------------------------------------------------------------------------------------------
    if eval_set is not None:
        eval_loss = run_eval_loss(model, eval_set, accelerator, pad_id, cfg.train.batch_size)
        logger = MetricsLogger(run_dir, [], enabled=main)
        logger.log(step, {"eval_loss": eval_loss})
        say(f"eval loss {eval_loss:.4f}")
    if cfg.train.save_steps:
        last_ckpt = checkpoint(step)
    _save_final(cfg, accelerator, model, loaded, run_dir, base_path, main)
    if main:
        plot_loss(run_dir)
        if tracker.count:
            say(f"{tracker.count} sample(s) were skipped; see {run_dir / 'skipped.jsonl'}.")
        say(f"Done: {step} steps. Output: {run_dir / 'final'}")
    accelerator.wait_for_everyone()
    return exit_code


# ---- Small helpers ----------------------------------------------------------------------------------------

def _load_dtype(cfg: Config, precision: str, deepspeed: str | None) -> torch.dtype:
    """Weights' dtype at load. A frozen or LoRA'd base loads in bf16/fp16 to halve its memory; a fully
    trained LLM or vision tower keeps fp32 master weights under autocast (DeepSpeed keeps its own)."""
    if precision == "fp32" or not torch.cuda.is_available():
        return torch.float32
    if not deepspeed and "full" in (cfg.model.llm, cfg.model.vision):
        return torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _base_for(cfg: Config, loaded, run_dir: Path, main: bool) -> str:
    """Where the frozen base lives: model.path, or RUN/base for a composed model (saved here, unquantized)."""
    if not loaded.composed:
        return cfg.model.path
    base = run_dir / "base"
    if main and not (base / "config.json").is_file():
        model = loaded.model
        if cfg.model.quantization:
            from vlmtune.models.compose import compose_llava

            model, _ = compose_llava(cfg.model.vision_encoder, cfg.model.language_model, projector_type=cfg.model.projector_type,
                                     vision_feature_layer=cfg.model.vision_feature_layer,
                                     vision_feature_select_strategy=cfg.model.vision_feature_select_strategy,
                                     template=cfg.data.template, trust_remote_code=cfg.model.trust_remote_code)
            model.model.multi_modal_projector.load_state_dict(loaded.model.model.multi_modal_projector.state_dict())
        tmp = run_dir / ".tmp-base"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        loaded.processor.save_pretrained(tmp)
        os.replace(tmp, base)
    return str(base.resolve())


def _gather_trainable(accelerator, model, names: list[str]) -> dict[str, torch.Tensor]:
    """Trainable weights, whole (ZeRO-3/FSDP shards gathered), on CPU; collective, so every rank calls it."""
    wanted = set(names)
    if accelerator.distributed_type.name in ("DEEPSPEED", "FSDP"):
        full = accelerator.get_state_dict(model)
        return {k: v for k, v in (full or {}).items() if k in wanted}
    unwrapped = accelerator.unwrap_model(model)
    return {n: p.detach().cpu().clone() for n, p in unwrapped.named_parameters() if n in wanted}


def _all_gather_objects(accelerator, items: list) -> list:
    if accelerator.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return list(gather_object(items))


def _ds_grad_norm(model):
    get = getattr(model, "get_global_grad_norm", None)
    if get is None:
        return None
    value = get()
    return float(value) if value is not None else None


def _export_weights(cfg: Config, unwrapped, loaded, state_dict: dict, folder: Path, base_path: str) -> None:
    """Write a peft adapter (or, with no LoRA, the full model) + processor + vlmtune_run.json into `folder`."""
    is_adapter = hasattr(unwrapped, "peft_config")
    if is_adapter:
        unwrapped.peft_config["default"].base_model_name_or_path = base_path
    unwrapped.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    loaded.processor.save_pretrained(folder)
    (folder / "vlmtune_run.json").write_text(json.dumps({
        "base_model": base_path, "kind": "adapter" if is_adapter else "full",
        "quantization": cfg.model.quantization, "template": cfg.data.template}, indent=1))


def _save_final(cfg: Config, accelerator, model, loaded, run_dir: Path, base_path: str, main: bool) -> None:
    full_state = accelerator.get_state_dict(model)  # gathers ZeRO-3 / FSDP shards; collective
    if not main:
        return
    final, tmp = run_dir / "final", run_dir / ".tmp-final"
    shutil.rmtree(tmp, ignore_errors=True)
    _export_weights(cfg, accelerator.unwrap_model(model), loaded, full_state, tmp, base_path)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _eval_during_training(cfg, model, loaded, accelerator, step, run_dir, logger, progress) -> None:
    if getattr(accelerator, "zero_stage", 0) == 3:
        # Generation on one rank would hang on ZeRO-3's collective weight gathering.
        if step == cfg.eval.every_steps and accelerator.is_main_process:
            progress.note("note: eval.every_steps is skipped under ZeRO-3; run `vlmtune eval` on RUN/checkpoints/step-N.")
        return
    if not accelerator.is_main_process:
        return
    from vlmtune.evaluation.during_training import evaluate_during_training
    from vlmtune.inference import ChatModel

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    try:
        chat = ChatModel(unwrapped, loaded.processor, cfg.data.template)
        result = evaluate_during_training(chat, cfg.eval, step, run_dir)
    finally:
        unwrapped.train()
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if scalars:
        logger.log(step, scalars)
        progress.show(scalars)
        progress.note(f"step {step}: " + " ".join(f"{k} {v:.3f}" for k, v in scalars.items()))
    for s in result.get("eval/samples") or []:  # watch answers change, as XTuner's chat hook shows them
        progress.note(f"step {step}: [{Path(s['image']).name if s.get('image') else 'text'}] {s['question']} -> {s['answer']}")

