"""Serve a model with an OpenAI-compatible API and a chat web page.

    vlmtune serve merged/ --port 8000
    vlmtune serve runs/my --host 127.0.0.1 --port 8000            # a run folder, adapter unmerged

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (text and `image_url` parts with `data:`
URIs; `stream: true`; max_tokens, temperature, top_p, stop; usage), and a web page at `/`.
Any OpenAI client works:  OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused").
http(s) image URLs are fetched only with --allow-remote-images, and never from loopback,
private or link-local addresses (checked at every redirect).
"""

from __future__ import annotations

import sys

from vlmtune.recipes.chat import add_generation_arguments, load_from_args


def add_arguments(p) -> None:
    add_generation_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", help="the model id clients send (default: the MODEL folder's name)")
    p.add_argument("--max-queue", type=int, default=16, help="requests admitted at once (running + waiting); more get 503")
    p.add_argument("--max-tokens", type=int, default=256, help="default max_tokens when a request names none")
    p.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs (public addresses only)")
    p.add_argument("--max-image-mb", type=float, default=20, help="largest image accepted, in MB")


def run(args) -> int:
    import uvicorn
    from pathlib import Path

    from vlmtune.errors import VlmtuneError
    from vlmtune.serving.server import create_app

    if args.max_queue < 1:
        raise VlmtuneError("--max-queue must be at least 1.")
    chat = load_from_args(args)
    name = args.model_name or Path(args.model.rstrip("/")).name or args.model
    app = create_app(chat, name, max_queue=args.max_queue, allow_remote_images=args.allow_remote_images,
                     max_image_bytes=int(args.max_image_mb * 1024 * 1024), default_max_tokens=args.max_tokens)
    print(f"serving `{name}` on http://{args.host}:{args.port}/ (API at /v1)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except OSError as e:
        raise VlmtuneError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    return 0
