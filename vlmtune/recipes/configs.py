"""List, show or copy the shipped training recipes (YAML configs), torchtune's `tune ls` / `tune cp`.

    vlmtune configs list                                # name and one-line description
    vlmtune configs show llava-1.5/7b_lora              # print the YAML, comments included
    vlmtune configs copy llava-1.5/7b_lora my.yaml      # start your own; --force to overwrite
    vlmtune train my.yaml data.path=data.json           # then train with dotted overrides

Names are paths below vlmtune/configs/ without `.yaml`. Each file opens with the command that launches it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vlmtune import configs
from vlmtune.errors import VlmtuneError


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="list the shipped configs with their descriptions")
    show = sub.add_parser("show", help="print a shipped config")
    show.add_argument("name", help="e.g. llava-1.5/7b_lora")
    copy = sub.add_parser("copy", help="copy a shipped config to a file you can edit")
    copy.add_argument("name", help="e.g. llava-1.5/7b_lora")
    copy.add_argument("dest", help="the YAML file to write (or a folder to write NAME's file into)")
    copy.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    p.set_defaults(_configs_parser=p)


def run(args) -> int:
    if args.action == "list":
        return list_configs()
    if args.action == "show":
        sys.stdout.write(configs.read_text(args.name))
        return 0
    if args.action == "copy":
        return copy_config(args.name, args.dest, force=args.force)
    args._configs_parser.print_help(sys.stderr)
    return 2


def list_configs() -> int:
    names = configs.names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {configs.describe(configs.read_text(name))}")
    return 0


def copy_config(name: str, dest: str, *, force: bool = False) -> int:
    text = configs.read_text(name)  # unknown name -> exit 2 before anything is written
    target = Path(dest)
    if target.is_dir():
        target = target / (name.removesuffix(".yaml").rsplit("/", 1)[-1] + ".yaml")
    if target.exists() and not force:
        raise VlmtuneError(f"{target} already exists; pass --force to overwrite it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: a reader never sees half a file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"copied {name} to {target}")
    print(f"train it: vlmtune train {target} [section.key=value ...]")
    return 0
