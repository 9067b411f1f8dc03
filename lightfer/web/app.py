"""A web page where anyone can try a model, and the JSON API behind it (`lightfer serve`).

`GET /` is a plain HTML/CSS/JS page (`static/`, nothing loaded from elsewhere): drop a
photo, pick one, or take one with the webcam, and see every face boxed with its seven-class
distribution. `POST /api/predict` takes one image as the multipart field `file` and
returns `{"file": name, "rows": [...]}`, the rows `lightfer predict` writes for that file
(`FaceRow.to_dict`, boxes in the file's own pixels), with `file` the uploaded name.
`GET /api/health` names the model, its classes, input size and the upload limit.

Refusals are JSON `{"detail": message}`: 413 above the upload limit (refused by its
Content-Length before it is read, or while it streams in), 415 when the bytes are not an
image PIL can decode (whatever their name or declared type says), 422 when no face is
found (or the form has no `file`); 500 when the model fails on a face (a `LightferError`,
e.g. non-finite outputs). The server goes on serving after each.

The predictor is built once by the caller. Inference runs in Starlette's threadpool, off
the event loop, one request at a time: MTCNN and torch's thread count are shared state.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightfer.errors import LightferError
from lightfer.labels import CLASSES
from lightfer.predict import NO_FACE, FaceRow, Predictor

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "STATIC_DIR", "create_app"]

DEFAULT_MAX_UPLOAD_MB = 20
STATIC_DIR = Path(__file__).with_name("static")

# A multipart body carries the file plus its boundaries and part headers.
_MULTIPART_OVERHEAD = 64 * 1024


def _too_large(limit: int) -> str:
    return (
        f"the upload is larger than the limit of {limit / 1e6:g} MB "
        f"(lightfer serve --max-upload-mb)"
    )


class _BodyLimit:
    """Refuses a request body over `limit` bytes with 413 before it is parsed or spooled to
    disk: at once by its Content-Length, or, without one, as soon as the bytes received
    pass the limit (FastAPI turns the HTTPException raised while reading into the reply)."""

    def __init__(self, app: ASGIApp, limit: int, message: str) -> None:
        self.app = app
        self.limit = limit
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)


def create_app(
    predictor: Predictor,
    *,
    model_name: str = "model",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1_000_000,
) -> FastAPI:
    """The web app around a predictor built once (`Predictor.from_path`).

    Args:
        predictor: detects and classifies the faces of every upload.
        model_name: shown on the page and by `/api/health` (the model file's name).
        max_upload_bytes: largest accepted file, in bytes; larger uploads get 413.

    Raises:
        ValueError: `max_upload_bytes` is below 1.
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be at least 1, got {max_upload_bytes}")
    lock = threading.Lock()
    # No /docs or /redoc: their pages load scripts from a CDN.
    app = FastAPI(title="lightfer", docs_url=None, redoc_url=None)
    too_large = _too_large(max_upload_bytes)
    app.add_middleware(_BodyLimit, limit=max_upload_bytes + _MULTIPART_OVERHEAD, message=too_large)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(LightferError)
    async def model_failed(request: Request, exc: LightferError) -> JSONResponse:
        """Inference failed for a reason the user can act on (e.g. the model's outputs are
        non-finite: a broken model file): 500, saying why."""
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """The model being served, its classes in output order and its input size."""
        return {
            "status": "ok",
            "model": model_name,
            "classes": list(CLASSES),
            "image_size": predictor.image_size,
            "max_upload_bytes": max_upload_bytes,
        }

    def rows_of(data: bytes, name: str) -> list[FaceRow]:
        """`lightfer predict`'s rows for the upload, read from a temporary file as it reads
        files (large photos decoded at a bounded size, boxes in the file's pixels)."""
        with tempfile.TemporaryDirectory(prefix="lightfer-serve-") as tmp:
            path = Path(tmp) / "upload"  # no suffix: read as an image, never as a video
            path.write_bytes(data)
            with lock:
                rows = list(predictor.predict_paths([path], progress=False))
        prefix = f"{path}: "
        return [
            replace(row, file=name, error=row.error and row.error.removeprefix(prefix))
            for row in rows
        ]

    @app.post("/api/predict")
    async def predict(file: UploadFile) -> dict[str, Any]:
        """Every face of one uploaded image: its box, score, seven probabilities, label."""
        if file.size is not None and file.size > max_upload_bytes:
            raise HTTPException(413, too_large)
        name = Path(file.filename or "").name or "upload"
        rows = await run_in_threadpool(rows_of, await file.read(), name)
        error = rows[0].error
        if error == NO_FACE:
            raise HTTPException(422, f"{name}: no face found (MTCNN found none it is sure of)")
        if error is not None:
            raise HTTPException(415, f"{name}: {error}; upload a photo (JPEG, PNG, WebP, ...)")
        return {"file": name, "rows": [row.to_dict() for row in rows]}

    return app
