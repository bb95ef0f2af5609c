"""Merge a LoRA run (RUN/final) or adapter folder into its base and write a standard HF model folder.

    vlmtune merge runs/my --out merged/ --verify

The output loads with stock transformers (AutoModelForImageTextToText / AutoProcessor): safetensors
weights in the base's dtype, config, processor, chat template, generation config and a README.
A QLoRA adapter is merged into the dequantized base. `--verify` compares merged and unmerged
logits on a probe image and prompt and exits 1 when they differ by more than the tolerance.
What the folder is (run, adapter, full model) is read from its files, never from its name.
"""

from __future__ import annotations

from vlmtune.errors import ProblemsFound


def add_arguments(p) -> None:
    p.add_argument("source", metavar="RUN_OR_ADAPTER", help="a run folder (uses RUN/final) or a peft adapter folder")
    p.add_argument("--out", required=True, help="the folder to write (must not exist, or be empty, unless --overwrite)")
    p.add_argument("--verify", action="store_true", help="compare merged vs. unmerged logits on a probe input")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest allowed logit difference for --verify (default by dtype: fp32 1e-3, fp16 5e-2, bf16 1e-1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--trust-remote-code", action="store_true", help="run the base model's own code (only if you trust it)")


def run(args) -> int:
    from vlmtune.export.merge import merge_run

    result = merge_run(args.source, args.out, verify=args.verify, tolerance=args.tolerance, overwrite=args.overwrite,
                       trust_remote_code=args.trust_remote_code)
    if not result.ok:
        raise ProblemsFound(f"merge verification failed: largest logit difference {result.max_diff:.3g} > "
                            f"tolerance {result.tolerance:g}")
    return 0
