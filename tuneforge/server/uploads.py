"""Reading a multipart upload as it arrives: the file goes straight to its writer, capped; the other fields are few
and small.

Starlette's form parser would spool the file to the system's temp folder with no cap of its own before the
route saw a byte; this one hands each piece of the one file to `write` (run off the event loop) and stops as soon
as the file passes the cap or the form breaks a bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from tuneforge.errors import UserError
from tuneforge.server.errors import TooLarge

MAX_FIELDS = 8  # form fields beside the file
MAX_FIELD_BYTES = 64 << 10  # one field's value
MAX_HEADER_BYTES = 8 << 10  # one part header
WRITE_BYTES = 1 << 20  # the file is handed to its writer in pieces of about this size


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None  # None: no file was sent
    size: int = 0  # the file's bytes


async def read_form(request: Request, write: Callable[[bytes], None], *, file_field: str, limit: int) -> Form:
    """Parse a multipart/form-data body with one file (`file_field`, at most `limit` bytes, given to `write`)."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UserError(f"Send the upload as multipart/form-data, with the file as '{file_field}'.",
                        code="invalid_content_type")
    parts = _Parts(file_field, limit)
    try:
        parser = MultipartParser(options[b"boundary"], parts.callbacks(), max_header_size=MAX_HEADER_BYTES)
        async for chunk in request.stream():
            parser.write(chunk)
            if parts.pending_bytes >= WRITE_BYTES:
                await anyio.to_thread.run_sync(write, parts.take())
        parser.finalize()
        if parts.pending:
            await anyio.to_thread.run_sync(write, parts.take())
    except FormParserError as exc:
        raise UserError(f"The multipart body could not be parsed ({exc}): send a well-formed form.",
                        code="invalid_multipart") from None
    except ClientDisconnect:
        raise UserError("The upload ended before its last byte: send it again.", code="upload_incomplete") from None
    if not parts.done:
        raise UserError("The multipart body ended early: send a complete form.", code="invalid_multipart")
    return parts.form


class _Parts:
    """python-multipart's callbacks: fields kept (bounded), the file's pieces queued for the writer."""

    def __init__(self, file_field: str, limit: int):
        self.file_field, self.limit = file_field, limit
        self.form = Form()
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.done = False
        self._header, self._value, self._disposition = b"", b"", b""
        self._name: str | None = None
        self._is_file = False
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end", "on_end")}

    def take(self) -> bytes:
        data, self.pending, self.pending_bytes = b"".join(self.pending), [], 0
        return data

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._is_file, self._data = b"", None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise UserError("A part of the form has no name: send the fields 'file' and 'purpose'.",
                            code="invalid_multipart")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self._name != self.file_field or self.form.filename is not None:
                raise UserError(f"Send one file per upload, as the field '{self.file_field}'.",
                                param=self.file_field, code="invalid_multipart")
            self.form.filename = options[b"filename"].decode("utf-8", "replace")
            self._is_file = True
        elif len(self.form.fields) >= MAX_FIELDS:
            raise UserError(f"The form has over {MAX_FIELDS} fields: send only the file and its purpose.",
                            code="invalid_multipart")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._is_file:
            self.form.size += len(piece)
            if self.form.size > self.limit:
                raise TooLarge(f"File is over the {self.limit >> 20} MB upload limit: split it, or ask the "
                               "operator to raise TUNEFORGE_MAX_UPLOAD_MB.", param=self.file_field,
                               code="file_too_large")
            self.pending.append(piece)
            self.pending_bytes += len(piece)
        elif len(self._data) + len(piece) > MAX_FIELD_BYTES:
            raise UserError(f"Form field '{self._name}' is over {MAX_FIELD_BYTES >> 10} KB: send it shorter.",
                            param=self._name, code="invalid_multipart")
        else:
            self._data += piece

    def on_part_end(self) -> None:
        if not self._is_file and self._name is not None:
            self.form.fields[self._name] = self._data.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.done = True
