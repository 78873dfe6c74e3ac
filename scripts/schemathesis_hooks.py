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


@schemathesis.deserializer("text/csv")
def csv_text(ctx, response):
    """The exports: a header line and rows of as many cells, else the check fails."""
    import csv
    import io

    text = response.content.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ValueError("an export without its header line")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"rows of different widths: {sorted(widths)}")
    return text
