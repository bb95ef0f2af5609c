"""Answer extraction against hand-worked cases."""

import pytest

from vlmtune.evaluation.answers import extract_choice

OPTS = {"A": "dog", "B": "cat", "C": "red and blue", "D": "red"}


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("b", "B"), (" B\n", "B"), ("(B)", "B"), ("B.", "B"), ("**B**", "B"), ("[C]", "C"),
    ("B. cat", "B"), ("B) cat", "B"), ("(B) cat", "B"), ("B: cat", "B"), ("B cat", "B"),
    ("The answer is B.", "B"), ("Answer: (C)", "C"), ("The correct option is D", "D"), ("so it is (A).", "A"),
    ("cat", "B"), ("Cat.", "B"), ("It is a cat", "B"),
    ("red and blue", "C"), ("red", "D"),  # "red" inside option C does not count as a second hit
])
def test_extract(text, letter):
    assert extract_choice(text, OPTS) == letter


@pytest.mark.parametrize("text", ["", "I am not sure.", "A or B", "E", "E.", "(E) horse", "The answer is E",
                                  "dog or cat", "category"])
def test_unparseable(text):
    assert extract_choice(text, OPTS) is None


def test_chinese_answers():
    opts = {"A": "苹果", "B": "香蕉", "C": "橙子"}
    assert extract_choice("B。", opts) == "B"
    assert extract_choice("答案是C", opts) == "C"
    assert extract_choice("答案：A", opts) == "A"
    assert extract_choice("选B", opts) == "B"
    assert extract_choice("（Ｃ）", opts) == "C"  # full-width forms
    assert extract_choice("Ｂ．香蕉", opts) == "B"
    assert extract_choice("香蕉", opts) == "B"
    assert extract_choice("图中是一个橙子。", opts) == "C"
    assert extract_choice("不知道", opts) is None


def test_e_option():
    opts = {"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"}
    assert extract_choice("E", opts) == "E"
    assert extract_choice("(E) 5", opts) == "E"
    assert extract_choice("E) five", {"A": "1", "B": "2", "C": "3", "D": "4"}) is None
