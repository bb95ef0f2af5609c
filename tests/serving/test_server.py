"""`vlmtune serve`: the official openai client (plain + streaming), bad requests, a burst, image URL safety."""

from __future__ import annotations

import concurrent.futures
import http.server
import threading

import httpx
import pytest
from openai import OpenAI

from serving_helpers import png_data_uri


def client(url: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models(server):
    url, _ = server
    assert [m.id for m in client(url).models.list().data] == ["tiny"]


def test_chat_with_image_plain_and_streaming(server):
    url, _ = server
    c = client(url)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_uri()}},
                                             {"type": "text", "text": "What digit is shown in the image?"}]}]
    r = c.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 16 and 1 <= r.usage.completion_tokens <= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    chunks = list(c.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip() == r.choices[0].message.content  # greedy: streaming gives the same answer
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)

    # continue the conversation; sampling parameters and stop are accepted
    more = messages + [{"role": "assistant", "content": r.choices[0].message.content},
                       {"role": "user", "content": "And the colour?"}]
    r2 = c.chat.completions.create(model="tiny", messages=more, max_tokens=4, temperature=0.7, top_p=0.9, stop=["\n", "USER"])
    assert isinstance(r2.choices[0].message.content, str)


BAD = [
    (b"{not json", 400, "invalid_json"),
    (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}', 404, "model_not_found"),
    (b'{"messages": []}', 400, "invalid_messages"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "invalid_role"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}',
     400, "invalid_image"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}',
     400, "invalid_image"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]}]}',
     400, "remote_images_disabled"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}',
     400, "invalid_image_url"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}', 400, "context_length_exceeded"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', 400, "invalid_value"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "unsupported_parameter"),
    (b'[1, 2]', 400, "invalid_body"),
]


@pytest.mark.parametrize("body,status,code", BAD)
def test_bad_requests_get_openai_errors(server, body, status, code):
    url, proc = server
    r = httpx.post(url + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and "type" in err
    assert proc.poll() is None


def test_openai_client_sees_errors(server):
    import openai

    url, _ = server
    with pytest.raises(openai.NotFoundError):
        client(url).chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=10**6)


def test_burst_of_concurrent_requests(server):
    """Queue of 3: a burst of 12 gets answers or 503s, never anything else, and the server lives on."""
    url, proc = server

    def one(i):
        body = {"model": "tiny", "max_tokens": 24, "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_uri((i * 20, 0, 0))}},
                                                          {"type": "text", "text": f"Request {i}?"}]}]}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        return r.status_code, r.text

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 503}, results
    assert codes.count(200) >= 3 and 503 in codes
    for c, text in results:
        if c == 503:
            assert '"server_busy"' in text
    assert proc.poll() is None
    assert client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices


def test_page_is_served(server):
    url, _ = server
    r = httpx.get(url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "v1/chat/completions" in r.text and 'type="file"' in r.text


# ---- image URL safety (unit level)

def test_remote_urls_refuse_internal_addresses():
    from vlmtune.serving.images import ImageRequestError, image_from_url, is_public_address

    assert is_public_address("8.8.8.8") and is_public_address("2606:4700::1111")
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "169.254.169.254", "::1", "fe80::1", "0.0.0.0",
               "::ffff:127.0.0.1", "100.64.0.1", "fd00::1"):
        assert not is_public_address(ip), ip
    for url in ("http://127.0.0.1:1/a.png", "http://localhost/a.png", "http://[::1]/a.png", "http://169.254.169.254/latest"):
        with pytest.raises(ImageRequestError) as e:
            image_from_url(url, allow_remote=True)
        assert e.value.code == "image_url_forbidden"


def test_redirect_hops_are_checked(monkeypatch):
    """A public-looking first hop that redirects to an internal address is refused at the redirect."""
    from vlmtune.serving import images

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/secret.png")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    real = images.is_public_address
    calls = []

    def first_hop_public(ip):
        calls.append(ip)
        return True if len(calls) == 1 else real(ip)

    monkeypatch.setattr(images, "is_public_address", first_hop_public)
    try:
        with pytest.raises(images.ImageRequestError) as e:
            images.image_from_url(f"http://127.0.0.1:{srv.server_port}/a.png", allow_remote=True)
        assert e.value.code == "image_url_forbidden" and "10.0.0.1" in str(e.value)
        assert calls == ["127.0.0.1", "10.0.0.1"]
    finally:
        srv.shutdown()


def test_remote_size_cap(monkeypatch):
    from vlmtune.serving import images

    class Big(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Big)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setattr(images, "is_public_address", lambda ip: True)
    try:
        with pytest.raises(images.ImageRequestError) as e:
            images.image_from_url(f"http://127.0.0.1:{srv.server_port}/big", allow_remote=True, max_bytes=1000)
        assert e.value.code == "image_too_large"
    finally:
        srv.shutdown()
