"""`vlmtune` command line: a table from command to recipe module.

Each recipe module defines `add_arguments(parser)` and `run(args) -> int`. This file only
dispatches and turns our exceptions into exit codes (0 ok, 1 problems found, 2 bad usage/input).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vlmtune.errors import ProblemsFound, VlmtuneError

# command -> (recipe module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("vlmtune.recipes.demo", "Train, merge, evaluate and chat offline on a tiny model and bundled images."),
    "train": ("vlmtune.recipes.train", "Train from a YAML config with dotted overrides; resumes a run folder."),
    "merge": ("vlmtune.recipes.merge", "Merge a LoRA run or adapter into its base and save a standard HF model."),
    "chat": ("vlmtune.recipes.chat", "Chat with a model in the terminal, with images."),
    "serve": ("vlmtune.recipes.serve", "Serve an OpenAI-compatible API and a web page."),
    "eval": ("vlmtune.recipes.evaluate", "Evaluate on MMBench, ScienceQA or VQA."),
    "convert": ("vlmtune.recipes.convert", "Convert checkpoints from other layouts (LLaVA's original) to HF."),
    "configs": ("vlmtune.recipes.configs", "List, show or copy the shipped recipes."),
}
DATA_COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("vlmtune.recipes.data_check", "Check every record and image; report problems by record."),
    "preview": ("vlmtune.recipes.data_preview", "Show a rendered sample with the trained spans marked."),
}


def _add(sub, name: str, module: str, help: str, load: bool) -> None:
    """Register a command; its recipe module is imported only when it is the command being run,
    so one recipe's import cost (or failure) never affects the others."""
    if not load:
        sub.add_parser(name, help=help)
        return
    mod = importlib.import_module(module)
    p = sub.add_parser(name, help=help, description=(mod.__doc__ or help).strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(p)
    p.set_defaults(_run=mod.run)


def _positionals(argv: list[str]) -> list[str]:
    return [a for a in argv if not a.startswith("-")][:2]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    words = _positionals(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="vlmtune", description="Fine-tune vision-language models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    data = sub.add_parser("data", help="Check and preview training data.")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    for name, (module, help) in DATA_COMMANDS.items():
        _add(data_sub, name, module, help, load=words[:2] == ["data", name])
    data.set_defaults(_parser=data)
    for name, (module, help) in COMMANDS.items():
        _add(sub, name, module, help, load=words[:1] == [name])
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter that says nothing to a user out of the terminal."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file loading bars; ours stay
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # bitsandbytes' CPU backend looks for an optional kernel package and warns when it is absent.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"  # DeepSpeed otherwise warns on every import


def _drop_launcher_args(argv: list[str]) -> list[str]:
    """The `deepspeed` launcher passes --local_rank=N; vlmtune reads the rank from the environment."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--local_rank", "--local-rank"):
            skip = True
        elif not a.startswith(("--local_rank=", "--local-rank=")):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    argv = _drop_launcher_args(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        (getattr(args, "_parser", None) or parser).print_help(sys.stderr)
        return 2
    try:
        code = args._run(args)
    except ProblemsFound as e:
        if str(e):
            print(f"vlmtune: {e}", file=sys.stderr)
        code = e.exit_code
    except VlmtuneError as e:
        print(f"vlmtune: error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("vlmtune: interrupted", file=sys.stderr)
        code = 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
