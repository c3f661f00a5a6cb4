"""multipart/form-data bodies (audio uploads), parsed with limits: the body is already capped (the
request size cap); here at most MAX_PARTS parts, each part's headers at most MAX_HEADER_BYTES, a text
field at most MAX_FIELD_BYTES, a file at most the caller's bound, and a boundary that is not RFC
2046's shape is a 400 before any parsing (LiteLLM CVE-2024-8984 was a denial of service in exactly
this). werkzeug's sans-IO decoder does the parsing, fed in slices so its buffer stays small; nothing
is written to disk."""

import re
from dataclasses import dataclass

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header

from gateway import errors

MAX_PARTS = 32
MAX_HEADER_BYTES = 8192
MAX_FIELD_BYTES = 65536
SLICE = 65536  # bytes fed to the decoder at a time; its buffer never holds more than about this
# RFC 2046: 1 to 70 characters of this set, not ending in a space.
BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded file, in memory."""

    filename: str
    content_type: str
    data: bytes


def _bad(message, status=400):
    if status == 413:
        return errors.PayloadTooLargeError(message)
    return errors.BadRequestError(message, param="file", code="invalid_multipart")


def parse_form(raw, content_type, max_file_bytes):
    """(fields, files) of a multipart/form-data body: text fields (a name repeated, or ending in
    `[]`, gives a list) and Upload files by field name."""
    from werkzeug.sansio.multipart import Data
    from werkzeug.sansio.multipart import Epilogue
    from werkzeug.sansio.multipart import Field
    from werkzeug.sansio.multipart import File
    from werkzeug.sansio.multipart import MultipartDecoder
    from werkzeug.sansio.multipart import NeedData

    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise _bad("The body must be multipart/form-data.")
    boundary = options.get("boundary") or ""
    if not BOUNDARY.fullmatch(boundary):
        raise _bad("The multipart boundary is missing or malformed.")
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_form_memory_size=SLICE + MAX_HEADER_BYTES * 2,
                               max_parts=MAX_PARTS)
    form = _Form(max_file_bytes)
    try:
        for offset in range(0, len(raw), SLICE):
            decoder.receive_data(raw[offset:offset + SLICE])
            if form.drain(decoder, (Field, File, Data, Epilogue, NeedData)):
                break
        else:
            decoder.receive_data(None)
            form.drain(decoder, (Field, File, Data, Epilogue, NeedData))
    except RequestEntityTooLarge:
        raise _bad(f"The multipart body has more than {MAX_PARTS} parts or an oversized part header.", 413) from None
    except ValueError:
        raise _bad("The multipart body is malformed.") from None
    if not form.complete:
        raise _bad("The multipart body ends before its closing boundary.")
    return form.fields, form.files


class _Form:
    """What the decoder's events said so far."""

    def __init__(self, max_file_bytes):
        self.max_file_bytes = max_file_bytes
        self.fields, self.files = {}, {}
        self.part, self.chunks, self.size = None, [], 0
        self.complete = False

    def drain(self, decoder, kinds):
        """Handle every event the decoder has; True once the closing boundary was read."""
        field, file, data, epilogue, need = kinds
        while True:
            event = decoder.next_event()
            if isinstance(event, need):
                return False
            if isinstance(event, epilogue):
                self.complete = True
                return True
            if isinstance(event, (field, file)):
                if sum(len(k) + len(v) for k, v in event.headers.items()) > MAX_HEADER_BYTES:
                    raise _bad(f"A multipart part's headers are larger than {MAX_HEADER_BYTES} bytes.", 413)
                self.part, self.chunks, self.size = event, [], 0
            elif isinstance(event, data):
                self._data(event, file)

    def _data(self, event, file):
        part = self.part
        self.size += len(event.data)
        is_file = isinstance(part, file)
        limit = self.max_file_bytes if is_file else MAX_FIELD_BYTES
        if self.size > limit:
            raise _bad(f"The multipart part `{part.name[:64]}` is larger than {limit} bytes.", 413)
        self.chunks.append(event.data)
        if event.more_data:
            return
        value = b"".join(self.chunks)
        if is_file:
            kind = part.headers.get("content-type") or "application/octet-stream"
            self.files[part.name] = Upload(part.filename or "upload", kind, value)
            return
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"The multipart field `{part.name[:64]}` is not UTF-8 text.") from None
        name = part.name[:-2] if part.name.endswith("[]") else part.name
        if name in self.fields or part.name.endswith("[]"):
            previous = self.fields.get(name, [])
            self.fields[name] = (previous if isinstance(previous, list) else [previous]) + [text]
        else:
            self.fields[name] = text


def encode_form(fields, files):
    """(content type, body) of a multipart/form-data body for an upstream: text fields (a list value
    repeats the field as `name[]`) and Upload files."""
    import secrets
    boundary = "gateway-" + secrets.token_hex(16)
    out = []
    for name, value in fields.items():
        for item, part_name in ([(v, name + "[]") for v in value] if isinstance(value, list) else [(value, name)]):
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(part_name)}"\r\n\r\n'
                       .encode() + str(item).encode() + b"\r\n")
    for name, upload in files.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
                   f'filename="{_quote(upload.filename)}"\r\nContent-Type: {_quote(upload.content_type)}\r\n\r\n'
                   .encode() + upload.data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(out)


def _quote(text):
    """A header parameter value: no quotes, backslashes or line breaks can break out of it."""
    return re.sub(r'["\\\r\n]', "_", str(text))[:255]
