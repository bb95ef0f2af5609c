"""Labels from spans against a locally trained BPE; length, truncation and mismatch problems."""

import pytest

from vlmtune.data.sample import Message as M
from vlmtune.data.sample import RecordProblem, Sample
from vlmtune.data.templates import Template, get_template
from vlmtune.data.tokenize import IGNORE_INDEX, encode_sample


def trained_text(tok, enc):
    runs, cur = [], []
    for i, l in zip(enc.input_ids, enc.labels):
        if l != IGNORE_INDEX:
            assert l == i
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur)); cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


MULTI = Sample([M("user", "<image>\nWhat digit is this?"), M("assistant", "seven"),
                M("user", "Is it even or odd?"), M("assistant", "The digit is odd.")], images=["a.png"])


@pytest.mark.parametrize("name,expected", [
    ("vicuna_v1", [" seven</s>", " The digit is odd.</s>"]),
    ("chatml", ["seven<|im_end|>", "The digit is odd.<|im_end|>"]),
    ("internlm2_chat", ["seven<|im_end|>", "The digit is odd.<|im_end|>"]),
    ("llama3", ["seven<|eot_id|>", "The digit is odd.<|eot_id|>"]),
])
def test_multi_turn_labels(tok, name, expected):
    enc = encode_sample(MULTI, tok, get_template(name), image_seq_len=5, max_length=512)
    assert trained_text(tok, enc) == expected
    image_id = tok.convert_tokens_to_ids("<image>")
    positions = [i for i, x in enumerate(enc.input_ids) if x == image_id]
    assert len(positions) == 5 and positions == list(range(positions[0], positions[0] + 5))
    assert all(enc.labels[p] == IGNORE_INDEX for p in positions)
    assert enc.num_images == 1
    if get_template(name).add_special_tokens:
        assert enc.input_ids[0] == tok.bos_token_id and enc.labels[0] == IGNORE_INDEX


def test_text_only_record_all_trained(tok):
    s = Sample([M("assistant", "one two three")], kind="text")
    enc = encode_sample(s, tok, get_template("vicuna_v1"), max_length=64)  # raw records always use `raw`
    assert tok.decode(enc.input_ids) == "<s>one two three</s>"
    assert enc.labels[0] == IGNORE_INDEX and all(l != IGNORE_INDEX for l in enc.labels[1:])


def test_text_only_chat_record(tok):
    s = Sample([M("user", "Hello!"), M("assistant", "How can I help you today?")])
    enc = encode_sample(s, tok, get_template("vicuna_v1"), max_length=256)
    assert trained_text(tok, enc) == [" How can I help you today?</s>"]


def test_plain_labels_only_caption(tok):
    s = Sample([M("user", "<image>\nDescribe the image."), M("assistant", "a handwritten digit")], images=["x.png"], kind="caption")
    enc = encode_sample(s, tok, get_template("plain"), image_seq_len=4, max_length=64)
    assert tok.decode(enc.input_ids) == "<s>" + "<image>" * 4 + "a handwritten digit\n"
    assert trained_text(tok, enc) == ["a handwritten digit\n"]


def test_length_counts_image_tokens_and_skip(tok):
    with pytest.raises(RecordProblem) as e:
        encode_sample(MULTI, tok, get_template("vicuna_v1"), image_seq_len=576, max_length=300)
    assert e.value.reason == "too-long"
    assert "(576 image tokens) > max_length 300" in e.value.detail
    enc = encode_sample(MULTI, tok, get_template("vicuna_v1"), image_seq_len=576, max_length=2048)
    assert len(enc.input_ids) == len(enc.labels) > 576


def test_truncate_drops_whole_turns_never_cuts_images(tok):
    s = Sample([M("user", "<image>\nWhat digit is this?"), M("assistant", "seven"),
                M("user", "<image>\nAnd this one?"), M("assistant", "three")], images=["a.png", "b.png"])
    full = encode_sample(s, tok, get_template("vicuna_v1"), image_seq_len=50, max_length=1000)
    image_id = tok.convert_tokens_to_ids("<image>")
    assert full.input_ids.count(image_id) == 100
    # too long for both exchanges, long enough for the first: the second exchange (and its image) goes whole
    for limit in range(len(full.input_ids) - 1, len(full.input_ids) - 60, -7):
        enc = encode_sample(s, tok, get_template("vicuna_v1"), image_seq_len=50, max_length=limit, overlong="truncate")
        assert enc.num_images == 1 and enc.input_ids.count(image_id) == 50
        assert trained_text(tok, enc) == [" seven</s>"]
        assert len(enc.input_ids) <= limit
    with pytest.raises(RecordProblem) as e:  # even one exchange does not fit
        encode_sample(s, tok, get_template("vicuna_v1"), image_seq_len=50, max_length=60, overlong="truncate")
    assert e.value.reason == "too-long"


def test_straddling_token_is_template_mismatch(tok):
    # the header ends inside a word, so one BPE token covers both header and answer characters
    t = Template("broken", user="USER: {content} ", assistant_header="The dig", assistant_end="</s>")
    s = Sample([M("user", "Which?"), M("assistant", "it is odd.")])
    with pytest.raises(RecordProblem) as e:
        encode_sample(s, tok, t, max_length=64)
    assert e.value.reason == "template-mismatch"


def test_no_trained_tokens(tok):
    t = Template("nothing", user="{content}", assistant_header="", assistant_end="")
    s = Sample([M("user", "Hi"), M("assistant", "")])
    with pytest.raises(RecordProblem) as e:
        encode_sample(s, tok, t, max_length=64)
    assert e.value.reason == "no-trained-tokens"


def test_image_token_count(tok):
    s = Sample([M("user", "<image> <image> two?"), M("assistant", "yes")], images=["a.png"])
    with pytest.raises(RecordProblem) as e:
        encode_sample(s, tok, get_template("vicuna_v1"), max_length=64)
    assert e.value.reason == "image-token-count"
