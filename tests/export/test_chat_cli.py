"""`vlmtune chat`: one-shot through the CLI, and the interactive chat through a pseudo-terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vlmtune.data.sample import Message


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, probe_image):
    path = tmp_path_factory.mktemp("img") / "probe.png"
    probe_image.save(path)
    return path


def _env():
    return dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONIOENCODING="utf-8")


def test_one_shot_prints_the_answer(lora_run, image_file, probe_image):
    from vlmtune.inference import load_chat_model

    r = subprocess.run([sys.executable, "-m", "vlmtune", "chat", str(lora_run), "--image", str(image_file),
                        "--prompt", "What digit is shown in the image?", "--max-new-tokens", "6"],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    expected = load_chat_model(str(lora_run)).generate([[Message("user", "What digit is shown in the image?")]],
                                                       [[probe_image]], max_new_tokens=6)[0]
    assert r.stdout.strip() == expected.strip()  # stdout holds the answer and nothing else


def test_one_shot_bad_image_is_exit_2(tiny_vlm, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    r = subprocess.run([sys.executable, "-m", "vlmtune", "chat", str(tiny_vlm), "--image", str(bad), "--prompt", "hi"],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 2 and "bad.png" in r.stderr and "Traceback" not in r.stderr


def test_interactive_chat_in_a_pty(tiny_vlm, image_file):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "vlmtune", "chat", str(tiny_vlm), "--max-new-tokens", "4"],
                          env=_env(), encoding="utf-8", timeout=90)
    try:
        child.expect_exact("USER> ")
        child.sendline("Hello!")
        child.expect_exact("ASSISTANT> ")
        child.expect_exact("USER> ")
        child.sendline(f"/image {image_file}")
        child.expect_exact("attached")
        child.expect_exact("USER> ")
        child.sendline("What digit is shown in the image?")
        child.expect_exact("ASSISTANT> ")
        child.expect_exact("USER> ")
        child.sendline("/image /no/such/file.png")
        child.expect_exact("error")
        child.expect_exact("USER> ")
        child.sendline("/reset")
        child.expect_exact("reset")
        child.expect_exact("USER> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_keeps_history(tiny_vlm, image_file, monkeypatch, capsys):
    """The second turn is rendered with the first question, its answer and the image."""
    import builtins

    from vlmtune.inference import ChatModel
    from vlmtune.cli import main

    seen = []
    real = ChatModel.stream

    def spy(self, messages, images=None, **kw):
        seen.append(([(m.role, m.content) for m in messages], len(images or [])))
        return real(self, messages, images, **kw)

    monkeypatch.setattr(ChatModel, "stream", spy)
    lines = iter([f"/image {image_file}", "first?", "second?", "/quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    assert main(["chat", str(tiny_vlm), "--max-new-tokens", "3"]) == 0
    assert seen[0] == ([("user", "<image>\nfirst?")], 1)
    roles = [r for r, _ in seen[1][0]]
    assert roles == ["user", "assistant", "user"] and seen[1][1] == 1 and seen[1][0][2][1] == "second?"


def test_adapter_without_weights_is_exit_2(tiny_vlm, lora_run, tmp_path, capsys):
    """Regression: peft looked for the missing adapter_model.safetensors on the Hub and crashed with a traceback."""
    import shutil

    from vlmtune.cli import main

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_run / "final", adapter)
    (adapter / "adapter_model.safetensors").unlink()
    assert main(["chat", str(tiny_vlm), "--adapter", str(adapter), "--prompt", "hi"]) == 2
    assert "adapter_model.safetensors" in capsys.readouterr().err


def test_image_command_without_path_or_quoted(tiny_vlm, image_file, tmp_path, monkeypatch, capsys):
    """Regression: `/image` alone printed "error: image : : FileNotFoundError ..."; a quoted path was not found."""
    import builtins
    import shutil

    from vlmtune.cli import main

    spaced = tmp_path / "my image.png"
    shutil.copy(image_file, spaced)
    lines = iter(["/image", f"/image '{spaced}'", "/quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    assert main(["chat", str(tiny_vlm), "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "usage: /image PATH" in err and "FileNotFoundError" not in err
    assert f"(image {spaced} attached" in err
