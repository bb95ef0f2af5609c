"""Golden strings for every template, single- and multi-turn."""

import pytest

from vlmtune.data.sample import Message as M
from vlmtune.data.templates import TEMPLATE_NAMES, VICUNA_SYSTEM, get_template
from vlmtune.errors import VlmtuneError

ONE = [M("user", "<image>\nWhat is it?"), M("assistant", "A cat.")]
TWO = ONE + [M("user", "Colour?"), M("assistant", "Ginger.")]


def full(t, msgs):
    return "".join(s.text for s in t.render(msgs))


def trained(t, msgs):
    return [s.text for s in t.render(msgs) if s.trained]


def test_vicuna_byte_exact():
    t = get_template("vicuna_v1")
    assert full(t, ONE) == f"{VICUNA_SYSTEM} USER: <image>\nWhat is it? ASSISTANT: A cat.</s>"
    assert full(t, TWO) == f"{VICUNA_SYSTEM} USER: <image>\nWhat is it? ASSISTANT: A cat.</s>USER: Colour? ASSISTANT: Ginger.</s>"
    assert trained(t, TWO) == ["A cat.</s>", "Ginger.</s>"]
    assert t.render_prompt(ONE[:1]) == f"{VICUNA_SYSTEM} USER: <image>\nWhat is it? ASSISTANT:"
    assert t.render_prompt(TWO[:3]).endswith("ASSISTANT: A cat.</s>USER: Colour? ASSISTANT:")
    assert t.stop_strings == ["</s>"] and t.add_special_tokens


def test_vicuna_matches_llava_conv_vicuna_v1():
    # LLaVA's SeparatorStyle.TWO get_prompt(), re-implemented from its source.
    def llava(system, pairs):
        seps, ret = [" ", "</s>"], system + " "
        msgs = [(r, m) for q, a in pairs for r, m in (("USER", q), ("ASSISTANT", a))]
        for i, (role, message) in enumerate(msgs):
            ret += role + ": " + message + seps[i % 2] if message else role + ":"
        return ret

    assert full(get_template("vicuna_v1"), TWO) == llava(VICUNA_SYSTEM, [("<image>\nWhat is it?", "A cat."), ("Colour?", "Ginger.")])
    assert get_template("vicuna_v1").render_prompt(TWO[:3]) == llava(VICUNA_SYSTEM, [("<image>\nWhat is it?", "A cat."), ("Colour?", "")])


def test_record_system_overrides():
    msgs = [M("system", "Be brief.")] + ONE
    assert full(get_template("vicuna_v1"), msgs) == "Be brief. USER: <image>\nWhat is it? ASSISTANT: A cat.</s>"
    assert full(get_template("chatml"), msgs).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_plain():
    t = get_template("plain")
    assert full(t, ONE) == "<image>A cat.\n"
    assert trained(t, ONE) == ["A cat.\n"]
    assert t.render_prompt(ONE[:1]) == "<image>"


@pytest.mark.parametrize("name", ["internlm2_chat", "chatml"])
def test_chatml_shapes(name):
    t = get_template(name)
    one = "<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n"
    assert full(t, ONE) == one
    assert full(t, TWO) == one + "<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\nGinger.<|im_end|>\n"
    assert trained(t, TWO) == ["A cat.<|im_end|>", "Ginger.<|im_end|>"]
    assert t.render_prompt(ONE[:1]) == "<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n"
    assert t.stop_strings == ["<|im_end|>"]


def test_llama3():
    t = get_template("llama3")
    h = "<|start_header_id|>{}<|end_header_id|>\n\n"
    one = "<|begin_of_text|>" + h.format("user") + "<image>\nWhat is it?<|eot_id|>" + h.format("assistant") + "A cat.<|eot_id|>"
    assert full(t, ONE) == one
    assert full(t, TWO) == one + h.format("user") + "Colour?<|eot_id|>" + h.format("assistant") + "Ginger.<|eot_id|>"
    assert trained(t, TWO) == ["A cat.<|eot_id|>", "Ginger.<|eot_id|>"]
    assert t.render_prompt(ONE[:1]).endswith(h.format("assistant"))
    assert not t.add_special_tokens


def test_raw():
    t = get_template("raw")
    assert full(t, [M("assistant", "Some text.")]) == "Some text.</s>"
    assert trained(t, [M("assistant", "Some text.")]) == ["Some text.</s>"]
    assert full(t, TWO) == "<image>\nWhat is it?\nA cat.</s>Colour?\nGinger.</s>"



def test_model_template_prefix_spans(tok_dir):
    from transformers import AutoTokenizer

    t_ = AutoTokenizer.from_pretrained(tok_dir)
    t_.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    t = get_template("model", t_)
    assert full(t, TWO) == full(get_template("chatml"), TWO)
    assert trained(t, TWO) == ["A cat.<|im_end|>", "Ginger.<|im_end|>"]
    assert t.render_prompt(ONE[:1]) == get_template("chatml").render_prompt(ONE[:1])


def test_model_template_non_prefix_is_mismatch(tok_dir):
    from transformers import AutoTokenizer

    from vlmtune.data.sample import RecordProblem

    t_ = AutoTokenizer.from_pretrained(tok_dir)
    # renders only the last message: earlier renderings are not prefixes of the whole
    t_.chat_template = "{{ messages[-1]['role'] }}: {{ messages[-1]['content'] }}\n{% if add_generation_prompt %}assistant:{% endif %}"
    with pytest.raises(RecordProblem) as e:
        get_template("model", t_).render(TWO)
    assert e.value.reason == "template-mismatch"


def test_unknown_and_model_without_chat_template(tok):
    with pytest.raises(VlmtuneError, match="known templates: vicuna_v1, plain"):
        get_template("vicuna")
    with pytest.raises(VlmtuneError, match="chat template"):
        get_template("model", tok)
    with pytest.raises(VlmtuneError):
        get_template("model")
    assert set(TEMPLATE_NAMES) == {"vicuna_v1", "plain", "internlm2_chat", "chatml", "llama3", "raw", "model"}
