"""Jinja chat templates stored in saved processors/tokenizers, so stock transformers'
`apply_chat_template` renders exactly what vlmtune trained on (see vlmtune.data.templates).

Message content may be a string (with `<image>` placeholders) or HF's list of parts
(`{"type": "image"}` / `{"type": "text", "text": ...}`); an image part renders as `<image>\n`.
"""

_CONTENT = (
    "{%- macro content(m) -%}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'image' or p['type'] == 'image_url' -%}{{ '<image>\\n' }}"
    "{%- elif p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")

CHAT_TEMPLATES: dict[str, str] = {
    "vicuna_v1": _CONTENT + (
        "{%- set ns = namespace(system='" + VICUNA_SYSTEM.replace("'", "\\'") + "') -%}"
        "{%- for m in messages if m['role'] == 'system' -%}{%- set ns.system = content(m) -%}{%- endfor -%}"
        "{{ ns.system + ' ' }}"
        "{%- for m in messages if m['role'] != 'system' -%}"
        "{%- if m['role'] == 'user' -%}{{ 'USER: ' + content(m) + ' ' }}"
        "{%- else -%}{{ 'ASSISTANT: ' + content(m) + '</s>' }}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}ASSISTANT:{%- endif -%}"
    ),
    "plain": _CONTENT + (
        "{%- for m in messages if m['role'] != 'system' -%}"
        "{%- if m['role'] == 'user' -%}{{ content(m) }}{%- else -%}{{ content(m) + '\\n' }}{%- endif -%}"
        "{%- endfor -%}"
    ),
    "internlm2_chat": _CONTENT + (
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'assistant' -%}{{ '<|im_start|>assistant\\n' + content(m) + '<|im_end|>\\n' }}"
        "{%- else -%}{{ '<|im_start|>' + m['role'] + '\\n' + content(m) + '<|im_end|>\\n' }}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    ),
    "llama3": _CONTENT + (
        "{%- for m in messages -%}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + content(m) + '<|eot_id|>' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
    ),
}
CHAT_TEMPLATES["chatml"] = CHAT_TEMPLATES["internlm2_chat"]


def chat_template_for(name: str) -> str | None:
    """The jinja template to store for a vlmtune template name (None for `model`: keep the model's own)."""
    return CHAT_TEMPLATES.get(name)
