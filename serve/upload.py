"""Read a multipart photo upload into memory, enforcing the size cap while the bytes arrive.

Starlette's own form parser spools files over 1 MB to a temporary file and reads the whole body before the
endpoint runs; a shopper's photo must never touch the disk and an oversized upload must be refused as soon
as it passes the cap, so the body is parsed here, chunk by chunk, with python-multipart's streaming parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

IMAGE_FIELD = "image"
MAX_FIELDS = 16
MAX_FIELD_BYTES = 1024
FORM_OVERHEAD_BYTES = 64 * 1024  # part headers, boundaries and the small text fields around the photo
ACCEPTED_PART_TYPES = ("image/", "application/octet-stream")


def too_large(max_image_bytes: int) -> str:
    return f"photo larger than the {max_image_bytes / 2**20:g} MB upload limit"


class UploadError(Exception):
    """A request the app refuses; `status` is the HTTP status, the message is shown to the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    image: bytes
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)
    is_file: bool = False


class _Collector:
    """python-multipart callbacks that keep the parts in memory within the limits."""

    def __init__(self, max_image_bytes: int) -> None:
        self.max_image_bytes = max_image_bytes
        self.parts: list[_Part] = []
        self.current = _Part()
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.finished = False

    def on_part_begin(self) -> None:
        self.current = _Part()
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.strip().lower()] = self.header_value.strip()
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise UploadError(400, 'a form part has no name (Content-Disposition needs name="...")')
        part = self.current
        part.name = options[b"name"].decode("utf-8", "replace")
        part.is_file = b"filename" in options
        # Kept only to name the upload in messages: nothing is ever written under it.
        part.filename = options[b"filename"].decode("utf-8", "replace") if part.is_file else None
        part.content_type = self.headers.get(b"content-type", b"").decode("latin-1").lower()
        if part.name == IMAGE_FIELD:
            if any(p.name == IMAGE_FIELD for p in self.parts):
                raise UploadError(400, "send one photo per request (the form has two 'image' parts)")
            if part.content_type and not part.content_type.startswith(ACCEPTED_PART_TYPES):
                raise UploadError(
                    415, f"the 'image' part is {part.content_type!r}; send a photo (image/jpeg, image/png, ...)"
                )
        elif part.is_file:
            raise UploadError(400, f"unexpected file field {part.name!r}: send the photo as 'image'")
        elif len(self.parts) >= MAX_FIELDS:
            raise UploadError(400, f"too many form fields (at most {MAX_FIELDS})")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        part.data += data[start:end]
        if part.name == IMAGE_FIELD:
            if len(part.data) > self.max_image_bytes:
                raise UploadError(413, too_large(self.max_image_bytes))
        elif len(part.data) > MAX_FIELD_BYTES:
            raise UploadError(400, f"form field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        self.parts.append(self.current)

    def on_end(self) -> None:
        self.finished = True


async def read_upload(request: Request, max_image_bytes: int) -> Upload:
    """The photo and text fields of a `multipart/form-data` request, or `UploadError`."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        shown = content_type.decode("latin-1") or "none"
        raise UploadError(415, f"send the photo as multipart/form-data with an 'image' field (got {shown})")
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary")
    max_body = max_image_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise UploadError(413, too_large(max_image_bytes))

    collector = _Collector(max_image_bytes)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
            "on_end",
        )
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise UploadError(413, too_large(max_image_bytes))
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        raise UploadError(400, "the upload was interrupted") from exc
    if not collector.finished:
        raise UploadError(400, "the multipart body ended early (no closing boundary)")

    image = next((p for p in collector.parts if p.name == IMAGE_FIELD), None)
    if image is None:
        raise UploadError(400, "no photo: send it as the 'image' field of a multipart form")
    if not image.data:
        raise UploadError(400, "empty file: the 'image' field has no bytes")
    fields = {p.name: p.data.decode("utf-8", "replace").strip() for p in collector.parts if p.name != IMAGE_FIELD}
    return Upload(image=bytes(image.data), filename=image.filename, fields=fields)
