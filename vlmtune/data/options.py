"""Command-line options shared by `vlmtune data check` and `vlmtune data preview`: where the tokenizer,
the image-token count and the template come from (`--model`, or `--tokenizer` + `--image-seq-len`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from vlmtune.data.templates import TEMPLATE_NAMES, get_template
from vlmtune.errors import VlmtuneError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="M", help="model folder or hub id: its tokenizer, image-token count and default template")
    parser.add_argument("--template", metavar="T", choices=TEMPLATE_NAMES,
                        help=f"conversation template ({', '.join(TEMPLATE_NAMES)}); default: the model's, else vicuna_v1")
    parser.add_argument("--tokenizer", metavar="DIR", help="a tokenizer folder to use instead of --model's")
    parser.add_argument("--image-seq-len", type=positive_int, metavar="N",
                        help="tokens each image expands to (default: from --model, e.g. 576 for CLIP ViT-L/14-336)")
    parser.add_argument("--image-folder", metavar="DIR", help="folder image paths are relative to (default: the data file's folder)")
    parser.add_argument("--allow-urls", action="store_true", help="accept http(s) image URLs in the data")


@dataclass
class TokenizerSetup:
    tokenizer: Any = None
    template_name: str = "vicuna_v1"
    image_seq_len: int | None = None
    image_token: str = "<image>"
    chat_source: Any = None  # what the `model` template reads its chat template from


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise VlmtuneError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def tokenizer_from_args(args) -> TokenizerSetup:
    setup = TokenizerSetup()
    if args.model:
        from vlmtune.models.processing import load_processing  # lazy: loads transformers processors

        info = load_processing(args.model, trust_remote_code=False)
        setup.tokenizer = info.tokenizer
        setup.image_seq_len = info.image_seq_len
        setup.image_token = info.image_token or "<image>"
        setup.template_name = info.default_template or "vicuna_v1"
        processor = getattr(info, "processor", None)
        setup.chat_source = processor if getattr(processor, "chat_template", None) else info.tokenizer
    if args.tokenizer:
        setup.tokenizer = _load_tokenizer(args.tokenizer)
        setup.chat_source = setup.tokenizer
    if args.image_seq_len:
        setup.image_seq_len = args.image_seq_len
    if args.template:
        setup.template_name = args.template
    return setup


def template_from_setup(setup: TokenizerSetup):
    return get_template(setup.template_name, setup.chat_source if setup.template_name == "model" else setup.tokenizer)
