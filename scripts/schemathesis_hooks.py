"""Hooks for scripts/schemathesis.sh: how to read the responses that are not JSON."""

import struct

import schemathesis

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@schemathesis.deserializer("image/png")
def png(ctx, response):
    """A PNG (the QR codes): its signature and a square IHDR, else the check fails.

    Returned as the string the document's `format: binary` schema describes.
    """
    body = response.content
    if not body.startswith(PNG_SIGNATURE) or body[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", body[16:24])
    if width != height or width == 0:
        raise ValueError(f"a QR code PNG is square, this one is {width}x{height}")
    return body.hex()
