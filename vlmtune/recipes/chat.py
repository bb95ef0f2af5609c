"""Chat with a model in the terminal, with images; tokens stream as they are generated.

    vlmtune chat merged/ --image cat.jpg --prompt "What is this?"      # one answer on stdout, then exit
    vlmtune chat runs/my                                               # interactive (a run folder, adapter unmerged)
    vlmtune chat llava-hf/llava-1.5-7b-hf --adapter runs/my/final --load-4bit

Interactive commands: `/image PATH` attaches an image to your next message, `/reset` starts over,
`/quit` (or Ctrl-D) leaves. The conversation history is kept between turns.
"""

from __future__ import annotations

import os
import sys

from vlmtune.errors import VlmtuneError


def add_generation_arguments(p) -> None:
    """The model and sampling flags shared by `chat` and `serve`."""
    p.add_argument("model", metavar="MODEL", help="an HF model folder or hub id, a run folder, or an adapter folder")
    p.add_argument("--adapter", help="a peft adapter folder applied on MODEL without merging")
    p.add_argument("--template", help="prompt template (vicuna_v1, chatml, llama3, internlm2_chat, plain, raw, model); "
                   "default: the run's template, else the processor's chat template")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--load-4bit", action="store_true", help="load the LLM in 4-bit NF4 (bitsandbytes)")
    q.add_argument("--load-8bit", action="store_true", help="load the LLM in 8-bit (bitsandbytes)")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto", help="weights dtype (auto: as saved)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model's own code (only if you trust it)")


def add_arguments(p) -> None:
    add_generation_arguments(p)
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="an image for the first message (repeatable)")
    p.add_argument("--prompt", help="ask this once, print the answer and exit")
    p.add_argument("--system", help="a system message")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--num-beams", type=int, default=1, help="beam search (the answer then comes in one piece)")
    p.add_argument("--max-new-tokens", type=int, default=256)


def load_from_args(args):
    from vlmtune.inference import load_chat_model

    quant = "4bit" if args.load_4bit else "8bit" if args.load_8bit else None
    return load_chat_model(args.model, args.adapter, quantization=quant, template=args.template,
                           trust_remote_code=args.trust_remote_code, dtype=None if args.dtype == "auto" else args.dtype)


def read_image(path: str):
    from vlmtune.data.images import load_image
    from vlmtune.data.sample import RecordProblem

    try:
        return load_image(path)
    except RecordProblem as e:
        raise VlmtuneError(f"image {path}: {e.detail or e}") from None
    except OSError as e:
        raise VlmtuneError(f"image {path}: {e}") from None


def run(args) -> int:
    from vlmtune.data.sample import IMAGE_PLACEHOLDER, Message
    from vlmtune.inference import PromptError

    images = [read_image(p) for p in args.image]
    chat = load_from_args(args)
    gen = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, num_beams=args.num_beams)
    system = [Message("system", args.system)] if args.system else []

    def answer(messages, imgs) -> str:
        text = ""
        try:
            for piece in chat.stream(messages, imgs, **gen):
                text += piece
                sys.stdout.write(piece)
                sys.stdout.flush()
        except PromptError as e:
            raise VlmtuneError(str(e)) from None
        sys.stdout.write("\n")
        sys.stdout.flush()
        return text

    if args.prompt is not None:
        answer(system + [Message("user", args.prompt)], images)
        return 0

    print("Interactive chat. /image PATH attaches an image, /reset starts over, /quit leaves.", file=sys.stderr)
    messages, history_images, pending = list(system), [], list(images)
    while True:
        try:
            line = input("USER> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            messages, history_images, pending = list(system), [], []
            print("(conversation reset)", file=sys.stderr)
            continue
        if line == "/image" or line.startswith("/image "):
            path = line[len("/image"):].strip()
            if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":  # a dragged-in, quoted path
                path = path[1:-1]
            path = os.path.expanduser(path)
            if not path:
                print("usage: /image PATH", file=sys.stderr)
                continue
            try:
                pending.append(read_image(path))
                print(f"(image {path} attached to your next message)", file=sys.stderr)
            except VlmtuneError as e:
                print(f"error: {e}", file=sys.stderr)
            continue
        if line.startswith("/"):
            print("commands: /image PATH, /reset, /quit", file=sys.stderr)
            continue
        content = IMAGE_PLACEHOLDER + "\n" + line if pending and len(pending) == 1 else \
            (IMAGE_PLACEHOLDER + "\n") * len(pending) + line
        turn = messages + [Message("user", content)]
        sys.stdout.write("ASSISTANT> ")
        sys.stdout.flush()
        try:
            reply = answer(turn, history_images + pending)
        except VlmtuneError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            continue
        messages = turn + [Message("assistant", reply)]
        history_images, pending = history_images + pending, []
