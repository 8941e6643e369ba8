"""An in-memory file store with the OpenAI ``/v1/files`` routes (for images/audio sent by file id).

    store = FileStore(max_file_bytes=20 << 20)
    app.include_router(create_files_router(store))
    resolver = MediaResolver(policy, files=store.content)   # file ids in chat requests

Routes: ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``. Uploads over
the size limit are refused with 413 while the body is read (before it is buffered whole); the
store also bounds the number of files and their total size. Contents live in memory only.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import FileStoreError

__all__ = ["FileStore", "FileStoreError", "StoredFile", "create_files_router"]

#: Purposes the OpenAI API defines (others are accepted too, as free-form strings).
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_MULTIPART_SLACK = 64 * 1024  # form boundaries, headers and the small text fields


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    content_type: str | None
    sha256: str

    @property
    def bytes(self) -> int:
        return len(self.data)

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Thread-safe in-memory files, bounded in count, per-file size and total size."""

    def __init__(
        self,
        *,
        max_file_bytes: int = 20 * 1024 * 1024,
        max_total_bytes: int = 512 * 1024 * 1024,
        max_files: int = 1000,
    ) -> None:
        if max_file_bytes <= 0 or max_total_bytes <= 0 or max_files <= 0:
            raise ValueError("file store limits must be positive")
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.max_files = max_files
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._files)

    @property
    def total_bytes(self) -> int:
        return self._total

    def add(
        self,
        data: bytes,
        filename: str = "upload",
        purpose: str = "user_data",
        content_type: str | None = None,
    ) -> StoredFile:
        size = len(data)
        if size == 0:
            raise FileStoreError("the uploaded file is empty", 400, "empty_file")
        if size > self.max_file_bytes:
            raise FileStoreError(
                f"file of {size} bytes exceeds the limit of {self.max_file_bytes} bytes",
                413,
                "file_too_large",
            )
        f = StoredFile(
            id="file-" + secrets.token_hex(12),
            filename=(filename or "upload")[:255],
            purpose=purpose,
            data=bytes(data),
            created_at=int(time.time()),
            content_type=content_type,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        with self._lock:
            if len(self._files) >= self.max_files:
                raise FileStoreError(
                    f"the file store is full ({self.max_files} files): delete some first",
                    413,
                    "too_many_files",
                )
            if self._total + size > self.max_total_bytes:
                raise FileStoreError(
                    f"the file store is full ({self._total} of {self.max_total_bytes} bytes used): delete some first",
                    413,
                    "storage_full",
                )
            self._files[f.id] = f
            self._total += size
        return f

    def get(self, file_id: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(file_id)

    def content(self, file_id: str) -> bytes | None:
        """The bytes of ``file_id`` (None when unknown): the lookup a MediaResolver takes."""
        f = self.get(file_id)
        return f.data if f is not None else None

    def delete(self, file_id: str) -> bool:
        with self._lock:
            f = self._files.pop(file_id, None)
            if f is None:
                return False
            self._total -= len(f.data)
            return True

    def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        order: str = "desc",
    ) -> tuple[list[StoredFile], bool]:
        """(files, has_more), newest first unless ``order="asc"``; ``after`` is a cursor (a file id)."""
        with self._lock:
            files = list(self._files.values())
        if order == "desc":
            files.reverse()
        if purpose:
            files = [f for f in files if f.purpose == purpose]
        if after:
            ids = [f.id for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        if limit is not None and len(files) > limit:
            return files[:limit], True
        return files, False


# ------------------------------------------------------------------ routes


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    kind = {404: "not_found_error", 413: "invalid_request_error"}.get(status, "invalid_request_error")
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
    )


def _download_headers(f: StoredFile) -> dict[str, str]:
    """A file comes back as a download, never as a page: whatever type the uploader claimed, the
    body is ``application/octet-stream``, sent as an attachment, and browsers may not sniff it."""
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in f.filename
    )
    return {
        "Content-Disposition": f'attachment; filename="{ascii_name or "file"}"; '
        f"filename*=UTF-8''{quote(f.filename, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds ``limit`` bytes (checked on Content-Length
    first, then while streaming)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    buf = bytearray()
    async for piece in request.stream():
        buf += piece
        if len(buf) > limit:
            return None
    return bytes(buf)


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


def create_files_router(store: FileStore, *, dependencies: Sequence[Any] = ()) -> APIRouter:
    """The ``/v1/files`` routes over ``store`` (``dependencies``: e.g. the API-key check)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    router = APIRouter(dependencies=list(dependencies))

    @router.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return _error(
                400, "upload files as multipart/form-data with a 'file' field", "invalid_content_type"
            )
        body = await _read_limited(request, store.max_file_bytes + _MULTIPART_SLACK)
        if body is None:
            return _error(
                413, f"the upload exceeds the limit of {store.max_file_bytes} bytes", "file_too_large"
            )
        try:
            parser = MultiPartParser(request.headers, _once(body), max_files=1, max_fields=16)
            form = await parser.parse()
        except MultiPartException as exc:
            return _error(400, f"malformed multipart upload: {exc.message}", "invalid_multipart")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(400, "the upload has no 'file' field", "missing_file", "file")
        purpose = form.get("purpose")
        if purpose is not None and not isinstance(purpose, str):
            return _error(400, "'purpose' must be a string", "invalid_value", "purpose")
        purpose = (purpose or "user_data").strip()
        if not purpose or len(purpose) > 64:
            return _error(400, "'purpose' must be a short non-empty string", "invalid_value", "purpose")
        try:
            data = await upload.read()
            stored = store.add(
                data,
                filename=upload.filename or "upload",
                purpose=purpose,
                content_type=upload.content_type,
            )
        except FileStoreError as exc:
            return _error(exc.status, str(exc), exc.code, "file")
        finally:
            await upload.close()
        return JSONResponse(stored.to_openai())

    @router.get("/v1/files")
    async def list_files(
        purpose: str | None = None, limit: int | None = None, after: str | None = None, order: str = "desc"
    ) -> Response:
        if order not in ("asc", "desc"):
            return _error(400, "order must be 'asc' or 'desc'", "invalid_value", "order")
        if limit is not None and not 1 <= limit <= 10000:
            return _error(400, "limit must be between 1 and 10000", "invalid_value", "limit")
        files, more = store.list(purpose=purpose, limit=limit, after=after, order=order)
        data = [f.to_openai() for f in files]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    @router.get("/v1/files/{file_id}")
    async def get_file(file_id: str) -> Response:
        f = store.get(file_id)
        if f is None:
            return _error(404, f"no file with id {file_id!r}", "file_not_found", "file_id")
        return JSONResponse(f.to_openai())

    @router.get("/v1/files/{file_id}/content")
    async def get_file_content(file_id: str) -> Response:
        f = store.get(file_id)
        if f is None:
            return _error(404, f"no file with id {file_id!r}", "file_not_found", "file_id")
        return Response(content=f.data, media_type="application/octet-stream", headers=_download_headers(f))

    @router.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str) -> Response:
        if not store.delete(file_id):
            return _error(404, f"no file with id {file_id!r}", "file_not_found", "file_id")
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    return router
