"""Convert checkpoints from other layouts to the Hugging Face layout.

    vlmtune convert llava-original llava-v1.5-7b/ llava-v1.5-7b-hf/ --vision-tower clip-vit-large-patch14-336/
    vlmtune convert llava-original stage1/mm_projector.bin projector/
    vlmtune convert llava-original stage1/mm_projector.bin full/ --language-model vicuna-7b/ --vision-tower clip/

`llava-original` reads LLaVA's own layout (`LlavaLlamaForCausalLM`, `model.mm_projector.*` weights,
`mm_vision_tower` / `mm_projector_type` / `mm_vision_select_layer` / `image_aspect_ratio` in
config.json) and writes an HF `LlavaForConditionalGeneration` folder with processor and chat
template. A stage-1 `mm_projector.bin` becomes a projector folder usable as `model.projector_from`,
or a full model when --language-model is given. .bin files are read with torch.load(weights_only=True).
"""

from __future__ import annotations

FORMATS = ("llava-original",)


def add_arguments(p) -> None:
    p.add_argument("format", choices=FORMATS, help="the source layout")
    p.add_argument("src", metavar="SRC", help="the checkpoint folder, or a stage-1 mm_projector.bin")
    p.add_argument("dst", metavar="DST", help="the HF folder to write")
    p.add_argument("--vision-tower", metavar="PATH", help="the CLIP vision folder (default: config's mm_vision_tower)")
    p.add_argument("--language-model", metavar="PATH", help="stage-1 projector only: the LLM to compose a full model with")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")


def run(args) -> int:
    from vlmtune.export.convert import convert_llava_original

    convert_llava_original(args.src, args.dst, vision_tower=args.vision_tower, language_model=args.language_model,
                           overwrite=args.overwrite)
    return 0
