"""Resolve the media references of chat requests into bytes, safely.

A reference is what an OpenAI-style content part carries:

* a ``data:`` URL (``data:image/png;base64,…``) — always accepted, size-limited;
* an uploaded file id (``file-…``, from the server's ``/v1/files`` store, or an ``image_file`` /
  ``file`` part) — looked up through a caller-given function;
* a remote ``http(s)://`` URL — **refused unless** the policy allows remote media. When allowed,
  the host name is resolved once, every address is checked (loopback, private, link-local,
  multicast, reserved and unspecified addresses are refused: no SSRF into the server's network or
  a cloud metadata service), and the connection goes to that checked address (no second lookup a
  DNS-rebinding attacker could change). Redirects are followed only to URLs that pass the same
  checks; the body is read up to a size limit within a total time limit. No proxy is used.
* base64 ``input_audio`` data.

:func:`media_hash` is the content hash used to share KV prefix caches between requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import MediaError
from .sniff import sniff

__all__ = [
    "FILE_ID_RE",
    "MediaPolicy",
    "MediaResolver",
    "ResolvedMedia",
    "canonicalize_media_parts",
    "decode_data_url",
    "fetch_remote",
    "is_public_address",
    "media_hash",
]

#: What an uploaded file id looks like (OpenAI style).
FILE_ID_RE = re.compile(r"^file-[A-Za-z0-9_-]{1,128}$")
#: Scheme used internally for file-id references rewritten from ``image_file`` / ``file`` parts.
FILE_URL_PREFIX = "llamabind-file:"

_DEFAULT_MAX_BYTES = 20 * 1024 * 1024


def media_hash(data: bytes) -> str:
    """SHA-256 hex of the media bytes (the same id libmtmd gives a bitmap decoded from them)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ResolvedMedia:
    data: bytes
    kind: Literal["image", "audio", "unknown"]
    format: str
    source: str  # data-url | file | remote | audio-data
    hash: str
    mime: str | None = None


@dataclass
class MediaPolicy:
    """Limits for resolving media references.

    ``allow_remote``: fetch ``http(s)`` URLs at all (off by default). ``allow_private_networks``
    lifts the address checks (never do this on a server reachable by others; tests use it to fetch
    from 127.0.0.1). ``allowed_schemes`` restricts remote URLs further (e.g. ``("https",)``).
    """

    max_bytes: int = _DEFAULT_MAX_BYTES
    allow_remote: bool = False
    remote_timeout: float = 10.0
    max_redirects: int = 3
    allow_private_networks: bool = False
    allowed_schemes: Sequence[str] = ("http", "https")
    user_agent: str = "llamabind-media-fetch/1"


# ------------------------------------------------------------------ data URLs


def decode_data_url(url: str, max_bytes: int = _DEFAULT_MAX_BYTES) -> tuple[bytes, str | None]:
    """(bytes, mime type) of a ``data:`` URL; :class:`MediaError` when malformed or too large."""
    if not url.startswith("data:"):
        raise MediaError("not a data: URL")
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise MediaError("malformed data: URL (no ',' before the data)")
    params = header.split(";")
    mime = params[0].strip().lower() or None
    is_b64 = any(p.strip().lower() == "base64" for p in params[1:])
    # base64 expands 3 bytes into 4 characters: refuse early, before decoding
    if (len(payload) * 3 // 4 if is_b64 else len(payload) // 3) > max_bytes:
        raise MediaError(f"data: URL payload exceeds the limit of {max_bytes} bytes", status=413)
    if is_b64:
        try:
            data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"data: URL has invalid base64 data: {exc}") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise MediaError(
            f"data: URL payload of {len(data)} bytes exceeds the limit of {max_bytes}", status=413
        )
    if not data:
        raise MediaError("data: URL is empty")
    return data, mime


# ------------------------------------------------------------------ remote URLs


def is_public_address(addr: str) -> bool:
    """False for loopback, private, link-local, multicast, reserved, unspecified, shared (CGNAT)
    and site-local addresses, also when written as IPv4-mapped / 6to4 / Teredo IPv6."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip.teredo is not None:
            candidates.extend(ip.teredo)
        if ip.is_site_local:
            return False
    for c in candidates:
        if (
            c.is_loopback
            or c.is_private
            or c.is_link_local
            or c.is_multicast
            or c.is_reserved
            or c.is_unspecified
            or not c.is_global
        ):
            return False
    return True


def _resolve_host(host: str, port: int, policy: MediaPolicy) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise MediaError(f"cannot resolve the media host {host!r}: {exc}") from exc
    addrs = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise MediaError(f"the media host {host!r} has no address")
    if not policy.allow_private_networks:
        bad = [a for a in addrs if not is_public_address(a)]
        if bad:
            raise MediaError(
                f"refusing to fetch media from {host!r}: it resolves to a non-public address ({bad[0]}); "
                "loopback, private, link-local and reserved networks are not allowed",
                status=403,
            )
    return addrs


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addr: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addr = addr

    def connect(self) -> None:
        self.sock = socket.create_connection((self._addr, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addr: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._addr = addr
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self._addr, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def fetch_remote(url: str, policy: MediaPolicy) -> tuple[bytes, str | None]:
    """GET ``url`` under ``policy`` (see the module doc); (bytes, content type)."""
    if not policy.allow_remote:
        raise MediaError(
            "remote media URLs are disabled on this server (start it with --allow-remote-media, or send the "
            "image as a data: URL or an uploaded file id)",
            status=400,
        )
    deadline = time.monotonic() + policy.remote_timeout
    current = url
    for _hop in range(policy.max_redirects + 1):
        parts = urllib.parse.urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in policy.allowed_schemes or scheme not in ("http", "https"):
            raise MediaError(f"unsupported media URL scheme {parts.scheme!r}")
        host = parts.hostname
        if not host:
            raise MediaError(f"media URL without a host: {current!r}")
        if parts.username or parts.password:
            raise MediaError("media URLs with credentials are not allowed")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise MediaError(f"bad port in media URL: {exc}") from exc
        addrs = _resolve_host(host, port, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MediaError(f"fetching {url} timed out after {policy.remote_timeout:.0f} s", status=408)
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = _PinnedHTTPSConnection(host, port, addrs[0], remaining, ssl.create_default_context())
        else:
            conn = _PinnedHTTPConnection(host, port, addrs[0], remaining)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request(
                "GET",
                path,
                headers={"User-Agent": policy.user_agent, "Accept": "image/*, audio/*, */*;q=0.5"},
            )
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise MediaError(f"redirect without a Location from {current}")
                current = urllib.parse.urljoin(current, location)
                continue
            if resp.status != 200:
                raise MediaError(f"fetching {current} failed: HTTP {resp.status} {resp.reason}", status=400)
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > policy.max_bytes:
                raise MediaError(
                    f"remote media of {length} bytes exceeds the limit of {policy.max_bytes} bytes",
                    status=413,
                )
            chunks: list[bytes] = []
            total = 0
            while True:
                if time.monotonic() > deadline:
                    raise MediaError(
                        f"fetching {url} timed out after {policy.remote_timeout:.0f} s", status=408
                    )
                # also bound each wait: a server trickling bytes must not outlive the deadline
                if conn.sock is not None:
                    conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
                piece = resp.read1(65536)
                if not piece:
                    break
                total += len(piece)
                if total > policy.max_bytes:
                    raise MediaError(
                        f"remote media exceeds the limit of {policy.max_bytes} bytes", status=413
                    )
                chunks.append(piece)
            ctype = resp.getheader("Content-Type")
            return b"".join(chunks), (ctype.split(";")[0].strip().lower() if ctype else None)
        except TimeoutError as exc:
            raise MediaError(
                f"fetching {url} timed out after {policy.remote_timeout:.0f} s", status=408
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise MediaError(f"fetching {current} failed: {exc}") from exc
        finally:
            conn.close()
    raise MediaError(f"too many redirects fetching {url}")


# ------------------------------------------------------------------ resolver


FileLookup = Callable[[str], bytes | None]


@dataclass
class MediaResolver:
    """Turns media references into bytes under a :class:`MediaPolicy`.

    ``files`` looks up an uploaded file id (returns None when unknown). ``allow_local_files``
    accepts ``file:///path`` URLs and plain paths (for the CLI and library use; never on a server).
    """

    policy: MediaPolicy = field(default_factory=MediaPolicy)
    files: FileLookup | None = None
    allow_local_files: bool = False

    def resolve_url(self, url: str) -> ResolvedMedia:
        """An image reference: data URL, file id, remote URL (or a local path when allowed)."""
        if not isinstance(url, str) or not url:
            raise MediaError("empty media URL")
        if url.startswith("data:"):
            data, mime = decode_data_url(url, self.policy.max_bytes)
            return self._done(data, "data-url", mime)
        file_id = url[len(FILE_URL_PREFIX) :] if url.startswith(FILE_URL_PREFIX) else url
        if FILE_ID_RE.match(file_id):
            return self.resolve_file_id(file_id)
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            data, mime = fetch_remote(url, self.policy)
            return self._done(data, "remote", mime)
        if self.allow_local_files and (scheme == "file" or scheme == "" or len(scheme) == 1):
            from pathlib import Path

            path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path) if scheme == "file" else url)
            try:
                size = path.stat().st_size
                if size > self.policy.max_bytes:
                    raise MediaError(
                        f"{path} is larger than the limit of {self.policy.max_bytes} bytes", status=413
                    )
                return self._done(path.read_bytes(), "file", None)
            except OSError as exc:
                raise MediaError(f"cannot read media file {path}: {exc}") from exc
        raise MediaError(
            f"unsupported media reference {url[:64]!r}: use a data: URL, an uploaded file id (file-…)"
            + (" or an http(s) URL" if self.policy.allow_remote else "")
        )

    def resolve_file_id(self, file_id: str) -> ResolvedMedia:
        if self.files is None:
            raise MediaError(f"file id {file_id!r} given, but there is no file store")
        data = self.files(file_id)
        if data is None:
            raise MediaError(f"no uploaded file with id {file_id!r}", status=404)
        if len(data) > self.policy.max_bytes:
            raise MediaError(
                f"file {file_id} exceeds the media limit of {self.policy.max_bytes} bytes", status=413
            )
        return self._done(data, "file", None)

    def resolve_audio(self, data_b64: str, fmt: str | None = None) -> ResolvedMedia:
        """``input_audio.data`` (base64) — also accepts a data URL or a file id there."""
        if data_b64.startswith("data:") or FILE_ID_RE.match(data_b64) or data_b64.startswith(FILE_URL_PREFIX):
            return self.resolve_url(data_b64)
        if len(data_b64) * 3 // 4 > self.policy.max_bytes:
            raise MediaError(f"audio data exceeds the limit of {self.policy.max_bytes} bytes", status=413)
        try:
            data = base64.b64decode(re.sub(r"\s+", "", data_b64), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"input_audio.data is not valid base64: {exc}") from exc
        if not data:
            raise MediaError("input_audio.data is empty")
        return self._done(data, "audio-data", f"audio/{fmt}" if fmt else None)

    def resolve_part(self, part: Any) -> ResolvedMedia:
        """A :class:`llamabind.chat.MediaPart` (image: ``url``; audio: ``data`` + ``format``)."""
        if part.kind == "audio":
            return self.resolve_audio(part.data or "", part.format)
        return self.resolve_url(part.url or "")

    @staticmethod
    def _done(data: bytes, source: str, mime: str | None) -> ResolvedMedia:
        info = sniff(data)
        return ResolvedMedia(data, info.kind, info.format, source, media_hash(data), mime)


# ------------------------------------------------------------------ message rewriting


def canonicalize_media_parts(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``messages`` where file-id parts become ``image_url`` parts the chat layer knows.

    ``{"type": "image_file", "image_file": {"file_id": ID}}`` and ``{"type": "file", "file":
    {"file_id": ID}}`` become ``{"type": "image_url", "image_url": {"url": "llamabind-file:ID"}}``
    (the content decides later whether it is an image or audio). Other parts are untouched.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if not isinstance(m, Mapping):
            out.append(m)  # type: ignore[arg-type]  # left for normalize_messages to reject
            continue
        msg = dict(m)
        content = msg.get("content")
        if isinstance(content, list):
            parts: list[Any] = []
            for part in content:
                if isinstance(part, Mapping) and part.get("type") in ("image_file", "file"):
                    ref = part.get(str(part.get("type")))
                    fid = ref.get("file_id") if isinstance(ref, Mapping) else None
                    if isinstance(fid, str) and fid:
                        parts.append({"type": "image_url", "image_url": {"url": FILE_URL_PREFIX + fid}})
                        continue
                    if isinstance(ref, Mapping) and isinstance(ref.get("file_data"), str):
                        parts.append({"type": "image_url", "image_url": {"url": ref["file_data"]}})
                        continue
                parts.append(part)
            msg["content"] = parts
        out.append(msg)
    return out
