"""The web page at `/` in a real headless Chromium (Debian's package), driven over the DevTools pipe.

It picks an image with the file input, sends a prompt, sees the answer stream in, and continues
the conversation. Skipped when /usr/bin/chromium is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (/usr/bin/chromium)")


class DevTools:
    """Chrome DevTools Protocol over --remote-debugging-pipe (fd 3: commands in, fd 4: answers out; NUL-separated JSON)."""

    def __init__(self, user_data_dir: Path):
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()

        def wire():
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
             f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self.next_id, self.buf, self.session = 0, b"", None

    def send(self, method: str, timeout: float = 30, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self.res_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def eval(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = self.eval(expression)
            except RuntimeError:  # the page is still loading
                value = None
            if value:
                return value
            time.sleep(0.2)
        log = self.eval("document.getElementById('log').innerText")
        raise TimeoutError(f"waited {timeout}s for {expression}; page log: {log!r}")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self.cmd_w, self.res_r):
            try:
                os.close(fd)
            except OSError:
                pass


def test_page_uploads_an_image_and_chats(server, tmp_path):
    from PIL import Image

    url, proc = server
    image = tmp_path / "digit.png"
    Image.new("RGB", (48, 40), (30, 160, 90)).save(image)
    browser = DevTools(tmp_path / "profile")
    try:
        browser.open(url + "/")
        browser.wait_for("document.readyState === 'complete' && document.getElementById('model').textContent === 'tiny'")
        doc = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=doc, selector="#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", files=[str(image)], nodeId=node)
        browser.wait_for("document.getElementById('preview').style.display === 'block'")

        browser.eval("document.getElementById('prompt').value = 'What digit is shown in the image?';"
                     "document.getElementById('send').click(); true")
        browser.wait_for("document.querySelectorAll('.msg.assistant[data-done=\"1\"]').length === 1")
        assert browser.eval("document.querySelector('.msg.user img') !== null")  # the image went with the message
        first = browser.eval("document.querySelector('.msg.assistant .text').textContent")
        assert first.strip(), "no answer appeared"
        assert not browser.eval("document.querySelector('.msg.error') !== null")

        browser.eval("document.getElementById('prompt').value = 'And is it even or odd?';"
                     "document.getElementById('send').click(); true")
        browser.wait_for("document.querySelectorAll('.msg.assistant[data-done=\"1\"]').length === 2")
        assert browser.eval("document.body.dataset.state") == "idle"
        assert not browser.eval("document.querySelector('.msg.error') !== null")
    finally:
        browser.close()
    assert proc.poll() is None
