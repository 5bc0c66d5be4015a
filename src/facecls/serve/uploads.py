"""Uploaded images → model input, with every way an upload can be wrong named for the caller.

Uploads stay in memory from the socket to the decoded tensor: the multipart body is parsed
from bytes already read (Starlette would spool a file over 1 MB to a temporary file on disk,
and faces are personal data). Decoding is facecls.data.decode.load_image — the same pixels
(upright, resized, face-cropped when the model was trained on crops) as training and
`facecls predict` — so the service answers what predict answers.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from facecls.data.decode import load_image
from facecls.data.faces import NoFaceFound
from facecls.data.preprocess import Preprocess
from facecls.errors import UserError


class BadRequest(Exception):
    """A request the service refuses: ``status`` (4xx) and a one-line ``message`` naming the cause."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    name: str
    data: bytes


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"the upload is {int(declared) / 2**20:.1f} MB, more than serve.max_upload_mb "
                              f"({max_bytes / 2**20:g} MB)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"the upload is larger than serve.max_upload_mb ({max_bytes / 2**20:g} MB)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_images(request: Request, max_bytes: int, max_files: int) -> list[Upload]:
    """Every file part of a multipart/form-data request (field names are not checked: the
    page sends ``files``, curl users often ``file`` or ``image``)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest(415, "send the images as multipart/form-data (e.g. curl -F files=@face.jpg …)")
    body = await read_body(request, max_bytes)

    async def stream():
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=100)
    # never roll over to a temporary file on disk (older Starlette names the limit max_file_size)
    parser.spool_max_size = parser.max_file_size = len(body) + 1
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise BadRequest(400, f"the multipart body is malformed or has too many files ({err.message})") from None
    uploads = [Upload(value.filename or f"image{i}", await value.read())
               for i, (_, value) in enumerate(form.multi_items()) if isinstance(value, UploadFile)]
    await form.close()
    if not uploads:
        raise BadRequest(422, "the request holds no image — add one or more files (form field `files`)")
    return uploads


def decode_upload(upload: Upload, prep: Preprocess, detector, max_pixels: int) -> tuple[torch.Tensor, list | None]:
    """One upload → (uint8 3×S×S, face box or None). Refuses what is not an image, what is
    damaged or truncated, and images over ``max_pixels`` (a decompression bomb is refused from
    its header, before any pixel is decoded)."""
    if not upload.data:
        raise BadRequest(422, f"{upload.name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as image:
                width, height = image.size
    except UnidentifiedImageError:
        raise BadRequest(415, f"{upload.name}: not an image (no image format recognises its bytes)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest(413, f"{upload.name}: refused as a decompression bomb (too many pixels)") from None
    except Exception as err:
        raise BadRequest(422, f"{upload.name}: unreadable image header ({type(err).__name__})") from None
    if width * height > max_pixels:
        raise BadRequest(413, f"{upload.name}: {width}×{height} px is more than serve.max_megapixels "
                              f"({max_pixels / 1e6:g} MP) — a decompression-bomb guard; send a smaller image")
    boxes: dict = {}
    try:
        pixels = load_image(io.BytesIO(upload.data), prep, None, detector, boxes)
    except NoFaceFound:
        raise BadRequest(422, f"{upload.name}: no face found (the model was trained on face crops)") from None
    except UserError as err:
        raise BadRequest(415, f"{upload.name}: {err}") from None
    except Exception as err:  # truncated or damaged data: PIL raises OSError, SyntaxError, ValueError, …
        raise BadRequest(422, f"{upload.name}: truncated or damaged image ({type(err).__name__})") from None
    box = next(iter(boxes.values()), None)
    return pixels, list(map(int, box)) if box is not None else None
