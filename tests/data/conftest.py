import pytest

from vlmtune.models.tiny import train_tiny_tokenizer


@pytest.fixture(scope="session")
def tok():
    return train_tiny_tokenizer()


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory, tok):
    d = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(d)
    return d
