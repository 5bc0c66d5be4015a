"""The HTTP API: /predict, /verify, /identify, /health, /metadata, the page at / and OpenAPI docs
at /docs. Every refused request is a 4xx JSON ``{"error": "<cause>"}``; the access log carries
method, path, status, sizes and timings — never an image or a file name."""
from __future__ import annotations

import base64
import io
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

import facecls
from facecls.data.faces import Detector, FaceCrop
from facecls.errors import UserError
from facecls.faces.gallery import identify_rows
from facecls.inference.runners import Runner
from facecls.serve.batcher import Batcher, Direct
from facecls.serve.gallery import ServedGallery, fused_embeddings
from facecls.serve.uploads import BadRequest, Upload, decode_upload, read_images

log = logging.getLogger("facecls.serve")
access = logging.getLogger("facecls.serve.access")
PAGE = Path(__file__).with_name("page.html")
MULTIPART = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


@dataclass
class Settings:
    """serve.* of conf/serve.yaml."""

    batching: bool = True
    max_batch: int = 32
    max_wait_ms: float = 5.0
    workers: int = 1            # threads for unbatched forward passes (batching=false)
    max_upload_mb: float = 10.0
    max_files: int = 16
    max_megapixels: float = 40.0
    top_k: int = 5


def _png(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


WARM_UP_PNG = _png()


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def png_data_url(pixels: torch.Tensor) -> str:
    """The model's input image (uint8 3×S×S) as a PNG data URL, made in memory."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def create_app(runner: Runner, settings: Settings, gallery: ServedGallery | None = None) -> FastAPI:
    """The service for ``runner`` (see the module docstring); ``gallery`` answers /identify."""
    info = runner.info
    prep = info.preprocessing()
    faces = FaceCrop(**info.faces)
    detector = Detector(faces) if faces.active else None
    scorer = Batcher(runner, settings.max_batch, settings.max_wait_ms) if settings.batching \
        else Direct(runner, settings.workers)
    max_bytes = int(settings.max_upload_mb * 2**20)
    max_pixels = int(settings.max_megapixels * 1e6)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await scorer.start()
        # one decode and one forward pass before the first caller: lazy initialisation (thread pools,
        # onnxruntime's and torch's first-call planning) is paid here, not by a user
        await run_in_threadpool(decode_upload, Upload("warm-up.png", WARM_UP_PNG), prep, None, max_pixels)
        await run_in_threadpool(runner, torch.zeros(1, 3, info.input_size, info.input_size, dtype=torch.uint8))
        log.info("serving %s (%s, %s): %d classes at %d px, batching %s", runner.source.name, runner.kind,
                 info.output, len(info.classes), info.input_size,
                 f"≤ {settings.max_batch} images / ≤ {settings.max_wait_ms:g} ms" if settings.batching else "off")
        yield
        await scorer.stop()  # uvicorn calls this after the in-flight requests were answered

    app = FastAPI(title="facecls", version=facecls.__version__, lifespan=lifespan,
                  description=f"Face classification with {runner.source.name} ({runner.kind}).")

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        access.info("%s %s %d in=%sB out=%sB %.1fms", request.method, request.url.path, response.status_code,
                    request.headers.get("content-length", "-"), response.headers.get("content-length", "-"),
                    (time.perf_counter() - start) * 1000)
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest):
        return error(err.status, err.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return error(err.status_code, str(err.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "engine": runner.kind, "model": runner.source.name}

    @app.get("/metadata")
    async def metadata():
        return {**info.to_dict(), "engine": runner.kind, "model_file": runner.source.name,
                "batching": {"on": settings.batching, "max_batch": settings.max_batch,
                             "max_wait_ms": settings.max_wait_ms},
                "limits": {"max_upload_mb": settings.max_upload_mb, "max_files": settings.max_files,
                           "max_megapixels": settings.max_megapixels},
                "gallery": gallery.describe() if gallery else None}

    async def score_uploads(request: Request, flip: bool = False):
        """The request's images, decoded (in threads: PIL releases the GIL) and scored in a shared batch
        (``flip``: their mirror images too, as rows N…2N-1 of the outputs)."""
        start = time.perf_counter()
        uploads = await read_images(request, max_bytes, settings.max_files)
        decoded = [await run_in_threadpool(decode_upload, u, prep, detector, max_pixels) for u in uploads]
        decode_ms = (time.perf_counter() - start) * 1000
        images = torch.stack([pixels for pixels, _ in decoded])
        if flip:
            images = torch.cat([images, images.flip(-1)])
        return uploads, decoded, await scorer.score(images), decode_ms

    def timing(start: float, decode_ms: float, scored) -> dict:
        return {"engine": runner.kind, "batch_images": scored.batch_images,
                "time_ms": {"total": round((time.perf_counter() - start) * 1000, 2), "decode": round(decode_ms, 2),
                            "model": round(scored.model_ms, 2)}}

    @app.post("/predict", openapi_extra=MULTIPART)
    async def predict(request: Request, top_k: int = Query(settings.top_k, ge=1, le=1000),
                      crop: bool = Query(False, description="also return the model's input image (PNG data URL)")):
        """Top-k classes with probabilities for each uploaded image (form field ``files``)."""
        if info.output != "logits":
            raise BadRequest(409, "this is an embedding model: it names no classes — use /verify or /identify")
        start = time.perf_counter()
        uploads, decoded, scored, decode_ms = await score_uploads(request)
        probabilities = scored.outputs.softmax(1)
        k = min(top_k, len(info.classes))
        results = []
        for upload, (pixels, box), p in zip(uploads, decoded, probabilities):
            values, indices = p.topk(k)
            result = {"file": upload.name, "box": box,
                      "predictions": [{"class": info.classes[i], "probability": round(v, 6)}
                                      for v, i in zip(values.tolist(), indices.tolist())]}
            if crop:
                result["crop"] = png_data_url(pixels)
            results.append(result)
        return {"results": results, **timing(start, decode_ms, scored)}

    def embedding_only(endpoint: str) -> None:
        if info.output != "embedding":
            raise BadRequest(409, f"{endpoint} needs an embedding model; this one is a classifier (output: logits) "
                                  "— use /predict, or serve a model trained with model.embedding_dim")

    @app.post("/verify", openapi_extra=MULTIPART)
    async def verify(request: Request, threshold: float | None = Query(None, ge=-1, le=1, description=(
            "decision threshold on the cosine similarity; default: the model's own"))):
        """Two images → cosine similarity of their embeddings and same/different at the threshold."""
        embedding_only("/verify")
        start = time.perf_counter()
        uploads, decoded, scored, decode_ms = await score_uploads(request)
        if len(uploads) != 2:
            raise BadRequest(422, f"/verify compares exactly two images; the request holds {len(uploads)}")
        a, b = torch.nn.functional.normalize(scored.outputs.float(), dim=1)
        similarity = float((a * b).sum())
        chosen = threshold if threshold is not None else info.threshold
        rule = "threshold= given" if threshold is not None else info.threshold_rule
        # facecls verify's rule: the same person when the similarity is strictly above the threshold
        return {"files": [u.name for u in uploads], "boxes": [box for _, box in decoded],
                "similarity": round(similarity, 6), "threshold": chosen, "threshold_rule": rule,
                "same": None if chosen is None else similarity > chosen, **timing(start, decode_ms, scored)}

    @app.post("/identify", openapi_extra=MULTIPART)
    async def identify(request: Request, threshold: float | None = Query(None, ge=-1, le=1, description=(
            "decision threshold on the cosine similarity; default: the gallery's for serve.far")),
            far: float | None = Query(None, gt=0, le=1, description="use the gallery's threshold for this FAR"),
            crop: bool = Query(False, description="also return the model's input image (PNG data URL)")):
        """Images → per image the best enrolled person, its similarity, the runner-up and the decision
        (the person, or ``unknown`` at or below the threshold) — as facecls identify answers."""
        embedding_only("/identify")
        if gallery is None:
            raise BadRequest(409, "no gallery is loaded — start the server with gallery=FILE (a file written by "
                                  "facecls enroll with this model)")
        try:
            chosen, rule = gallery.decide(far, threshold)
        except UserError as err:
            raise BadRequest(422, str(err)) from None
        start = time.perf_counter()
        uploads, decoded, scored, decode_ms = await score_uploads(request, flip=gallery.flip)
        rows = identify_rows(fused_embeddings(scored.outputs, len(uploads), gallery.flip), gallery.gallery, chosen)
        results = [{"file": upload.name, "box": box, **row, "similarity": round(row["similarity"], 6),
                    "runner_up_similarity": None if row["runner_up_similarity"] is None
                    else round(row["runner_up_similarity"], 6)}
                   for upload, (_, box), row in zip(uploads, decoded, rows)]
        if crop:
            for result, (pixels, _) in zip(results, decoded):
                result["crop"] = png_data_url(pixels)
        return {"results": results, "threshold": chosen, "threshold_rule": rule, **timing(start, decode_ms, scored)}

    return app
