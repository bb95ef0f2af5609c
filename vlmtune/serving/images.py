"""Images in API requests: `data:` URIs always; http(s) URLs only when allowed, never to internal addresses.

A remote fetch resolves the host, refuses loopback/private/link-local/reserved/multicast addresses,
connects to the checked address itself (so DNS can't change between check and connect), and
follows at most a few redirects by hand, checking every hop the same way. Size and time are capped.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

MAX_IMAGE_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3


class ImageRequestError(ValueError):
    """An image the request carries can't be used; `code` is the OpenAI-style error code."""

    def __init__(self, message: str, code: str = "invalid_image"):
        super().__init__(message)
        self.code = code


def decode_image_bytes(data: bytes, what: str):
    from vlmtune.data.images import load_image
    from vlmtune.data.sample import RecordProblem

    try:
        return load_image(data)
    except RecordProblem as e:
        raise ImageRequestError(f"{what}: {e.detail or e}") from None


def image_from_url(url: str, *, allow_remote: bool = False, max_bytes: int = MAX_IMAGE_BYTES,
                   timeout_s: float = FETCH_TIMEOUT_S):
    """A PIL RGB image from a `data:` URI or (if allowed) an http(s) URL."""
    if not isinstance(url, str) or not url:
        raise ImageRequestError("image_url.url must be a non-empty string.", "invalid_image_url")
    if url.startswith("data:"):
        return decode_image_bytes(_data_uri_bytes(url, max_bytes), "data: URI image")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageRequestError(f"image URLs must be data: URIs{' or http(s)' if allow_remote else ''}; got scheme {scheme or '(none)'!r}.",
                                "invalid_image_url")
    if not allow_remote:
        raise ImageRequestError("remote image URLs are disabled on this server (start it with --allow-remote-images); "
                                "send the image inline as a data: URI.", "remote_images_disabled")
    return decode_image_bytes(fetch_public(url, max_bytes=max_bytes, timeout_s=timeout_s), url)


def _data_uri_bytes(url: str, max_bytes: int) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise ImageRequestError("malformed data: URI (no comma).", "invalid_image_url")
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise ImageRequestError(f"image is larger than {max_bytes} bytes.", "image_too_large")
    if head.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ImageRequestError("data: URI is not valid base64.", "invalid_image") from None
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload)


def is_public_address(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_reserved
                or addr.is_unspecified or (isinstance(addr, ipaddress.IPv4Address) and addr in ipaddress.ip_network("100.64.0.0/10")))


def public_address_of(host: str, port: int) -> str:
    """One resolved address of `host`, refusing the host if ANY address it resolves to is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ImageRequestError(f"cannot resolve image host {host!r}: {e}", "invalid_image_url") from None
    ips = [info[4][0] for info in infos]
    bad = [ip for ip in ips if not is_public_address(ip)]
    if not ips or bad:
        raise ImageRequestError(f"image host {host!r} resolves to a non-public address ({bad[0] if bad else 'none'}); refused.",
                                "image_url_forbidden")
    return ips[0]


def fetch_public(url: str, *, max_bytes: int = MAX_IMAGE_BYTES, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
    import httpx

    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageRequestError(f"image URL {url!r} is not an http(s) URL.", "invalid_image_url")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ip = public_address_of(parts.hostname, port)
        pinned = parts._replace(netloc=(f"[{ip}]" if ":" in ip else ip) + f":{port}").geturl()
        left = deadline - time.monotonic()
        if left <= 0:
            raise ImageRequestError(f"fetching {url} took longer than {timeout_s:g}s.", "image_fetch_timeout")
        try:
            with httpx.Client(timeout=left, follow_redirects=False, trust_env=False) as client:
                req = client.build_request("GET", pinned, headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
                                           extensions={"sni_hostname": parts.hostname, "timeout": {"connect": left, "read": left, "write": left, "pool": left}})
                r = client.send(req, stream=True)
                try:
                    if r.is_redirect:
                        url = urljoin(url, r.headers.get("location", ""))
                        continue
                    if r.status_code != 200:
                        raise ImageRequestError(f"fetching {url} answered HTTP {r.status_code}.", "image_fetch_failed")
                    body = bytearray()
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise ImageRequestError(f"image at {url} is larger than {max_bytes} bytes.", "image_too_large")
                        if time.monotonic() > deadline:
                            raise ImageRequestError(f"fetching {url} took longer than {timeout_s:g}s.", "image_fetch_timeout")
                    return bytes(body)
                finally:
                    r.close()
        except httpx.HTTPError as e:
            raise ImageRequestError(f"fetching {url} failed: {type(e).__name__}: {e}", "image_fetch_failed") from None
    raise ImageRequestError(f"too many redirects fetching the image (more than {MAX_REDIRECTS}).", "image_fetch_failed")
