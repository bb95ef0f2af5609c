"""The whole story offline, on a tiny model and scikit-learn's bundled handwritten digits.

    vlmtune demo --out demo_out

1. builds a tiny base VLM (CLIP-style encoder + projector + Llama-style LLM, composed from their own
   checkpoints) and teaches it "What digit is shown in the image?";
2. LoRA-fine-tunes it (LoRA on the LLM, the projector trained beside it as in LLaVA-1.5's LoRA recipe)
   on an instruction the base never saw: "Which digit comes after this one?";
3. merges the adapter into a standard HF model folder, measures held-out accuracy on the new task
   before and after, shows one chat answer, and writes DIR/report.json and DIR/loss.png.

Each run folder's config.yaml reruns with `vlmtune train`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from vlmtune.errors import ProblemsFound


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--quick", action="store_true", help="a few steps only, to check the pipeline (accuracy not expected)")
    p.add_argument("--seed", type=int, default=0)


# Steps chosen so that the full demo takes a few minutes on 2 CPU cores.
FULL = {"base_steps": 600, "base_lr": 1e-3, "finetune_steps": 250, "finetune_lr": 2e-3, "batch_size": 32, "eval_limit": None}
QUICK = {"base_steps": 4, "base_lr": 1e-3, "finetune_steps": 4, "finetune_lr": 2e-3, "batch_size": 8, "eval_limit": 16}


def run(args) -> int:
    from transformers.utils import logging as hf_logging

    from vlmtune.demo_data import build_digit_data
    from vlmtune.models.tiny import build_tiny_parts
    from vlmtune.recipes.train import train, resolve_config

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    plan = QUICK if args.quick else FULL
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    # ---- Data and the parts the base model is composed from --------------------------------------------
    print("[1/6] Bundled digits -> LLaVA-format JSON; tiny CLIP and Llama checkpoints")
    data = build_digit_data(out / "data", seed=args.seed)
    # 16-pixel patches: 4 image tokens per 32x32 digit, plenty for 8x8 source images and fast on a CPU.
    parts = build_tiny_parts(out / "parts", seed=args.seed, patch_size=16)
    eval_images = out / "eval_images"
    _copy_eval_images(data["next_eval"], data["images"], eval_images)

    # ---- Stage 1: a base VLM that knows which digit it sees ---------------------------------------------
    print("[2/6] Base model: compose and train on 'What digit is shown in the image?'")
    base_cfg = {
        "output_dir": str(out / "runs" / "base"),
        "model": {"vision_encoder": str(parts["vision"]), "language_model": str(parts["llm"]),
                  "vision": "full", "projector": "full", "llm": "full"},
        "data": {"path": str(data["identify_train"]), "image_folder": str(data["images"]),
                 "eval_path": str(data["identify_eval"]), "max_length": 256, "num_workers": 1},
        "train": {"max_steps": plan["base_steps"], "batch_size": plan["batch_size"], "lr": plan["base_lr"],
                  "warmup_ratio": 0.05, "save_steps": 0, "seed": args.seed, "report_to": ["none"], "progress": True},
    }
    base_run = _train(base_cfg, out / "base.yaml", train, resolve_config)

    # ---- Stage 2: LoRA on a new instruction --------------------------------------------------------------
    print("[3/6] Fine-tune with LoRA on a new instruction: 'Which digit comes after this one?'")
    ft_cfg = {
        "output_dir": str(out / "runs" / "finetune"),
        "model": {"path": str(base_run / "final"), "vision": "frozen", "projector": "full", "llm": "lora"},
        "data": {"path": str(data["next_train"]), "image_folder": str(data["images"]),
                 "eval_path": str(data["next_eval"]), "max_length": 256, "num_workers": 1},
        "train": {"max_steps": plan["finetune_steps"], "batch_size": plan["batch_size"], "lr": plan["finetune_lr"],
                  "warmup_ratio": 0.05, "save_steps": max(plan["finetune_steps"] // 2, 1), "seed": args.seed,
                  "report_to": ["none"]},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
    }
    ft_run = _train(ft_cfg, out / "finetune.yaml", train, resolve_config)

    # ---- Merge, evaluate before/after, chat --------------------------------------------------------------
    print("[4/6] Merge the adapter into a standard HF model folder")
    from vlmtune.export.merge import merge_run

    merged = out / "merged"
    merge_run(str(ft_run), str(merged), verify=True, overwrite=True, log=lambda *a, **k: None)

    print("[5/6] Held-out accuracy on the new instruction, before and after")
    before = _accuracy(str(base_run / "final"), data["next_eval"], data["images"], plan["eval_limit"])
    after = _accuracy(str(merged), data["next_eval"], data["images"], plan["eval_limit"])

    print("[6/6] One chat answer from the merged model")
    sample = json.loads(Path(data["next_eval"]).read_text())[0]
    answer = _chat_once(str(merged), data["images"] / sample["image"], "Which digit comes after this one?")

    if (ft_run / "loss.png").is_file():
        shutil.copyfile(ft_run / "loss.png", out / "loss.png")
    report = {
        "before": before, "after": after,
        "merged_model": os.path.relpath(merged, out),
        "runs": {"base": os.path.relpath(base_run, out), "finetune": os.path.relpath(ft_run, out)},
        "eval_images": os.path.relpath(eval_images, out),
        "task": {"question": "Which digit comes after this one?", "held_out": before["n"]},
        "chat": {"image": os.path.relpath(data["images"] / sample["image"], out), "answer": answer},
        "seconds": round(time.time() - t_start, 1),
        "quick": bool(args.quick),
    }
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / "report.json")

    print()
    print(f"{'held-out accuracy on the new instruction':<44} {'value':>8}")
    print(f"{'before fine-tuning (base model)':<44} {before['accuracy']:>8.3f}")
    print(f"{'after LoRA fine-tuning (merged model)':<44} {after['accuracy']:>8.3f}")
    print(f"chat: [{sample['image']}] Which digit comes after this one?  ->  {answer}")
    print(f"report: {out / 'report.json'}   loss curve: {out / 'loss.png'}   ({report['seconds']} s)")
    if not args.quick and after["accuracy"] < 0.9:
        raise ProblemsFound(f"the fine-tuned model reached only {after['accuracy']:.3f} held-out accuracy (< 0.9).")
    return 0


def _train(cfg: dict, yaml_path: Path, train, resolve_config) -> Path:
    yaml_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = Path(cfg["output_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo always starts fresh
    code = train(resolve_config(str(yaml_path), []))
    if code:
        raise SystemExit(code)
    return run_dir


def _copy_eval_images(eval_json: Path, images: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for rec in json.loads(Path(eval_json).read_text()):
        target = dest / rec["image"]
        if not target.exists():
            shutil.copyfile(images / rec["image"], target)


def _accuracy(model_path: str, eval_json: Path, images: Path, limit: int | None) -> dict:
    from PIL import Image

    from vlmtune.data.sample import Message
    from vlmtune.demo_data import QUESTIONS, expected_word, parse_digit_word
    from vlmtune.inference import load_chat_model

    chat = load_chat_model(model_path)
    records = json.loads(Path(eval_json).read_text())[:limit]
    correct, batch = 0, 64
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        convs = [[Message("user", f"<image>\n{QUESTIONS['next']}")] for _ in chunk]
        imgs = [[Image.open(images / r["image"]).convert("RGB")] for r in chunk]
        answers = chat.generate(convs, imgs, max_new_tokens=12)
        correct += sum(parse_digit_word(a) == expected_word("next", r["label"]) for a, r in zip(answers, chunk))
    return {"accuracy": correct / max(len(records), 1), "correct": correct, "n": len(records)}


def _chat_once(model_path: str, image: Path, prompt: str) -> str:
    from PIL import Image

    from vlmtune.data.sample import Message
    from vlmtune.inference import load_chat_model

    chat = load_chat_model(model_path)
    return chat.generate([[Message("user", f"<image>\n{prompt}")]], [[Image.open(image).convert("RGB")]],
                         max_new_tokens=12)[0].strip()
