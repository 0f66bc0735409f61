"""Masked texts for fill-mask: the `[MASK]` / `[MASK:n]` syntax and reading one text per line (no torch).

A text holds literal characters and masks. `[MASK:n]` (n a positive decimal integer) stands for exactly n
unknown UTF-8 bytes; a bare `[MASK]` leaves the number of bytes to the tool. Anything else that starts
with `[MASK:` is a syntax error (a typo should not silently become literal text); `[MASKED]` or `[mask]`
are ordinary text. There is no escape for a literal `[MASK]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional, Union

MASK_TOKEN = "[MASK]"
# `[MASK:` with up to this many digits is parsed; longer numbers are refused before any arithmetic.
MAX_MASK_DIGITS = 9

_MASK_START = re.compile(r"\[MASK(?=[\]:])")
_SIZED_MASK = re.compile(r"\[MASK:([0-9]+)\]")


class MaskSyntaxError(ValueError):
    """A text that cannot be filled: empty, without a mask, or with a malformed mask."""


@dataclass(frozen=True)
class MaskedText:
    """A parsed text: literal `pieces` around `masks` (len(pieces) == len(masks) + 1).

    Each mask is its length in bytes, or None for a bare `[MASK]` whose length the tool chooses.
    """

    text: str
    pieces: tuple[str, ...]
    masks: tuple[Optional[int], ...]

    def piece_bytes(self) -> list[bytes]:
        """The literal pieces as UTF-8 bytes."""
        return [piece.encode("utf-8") for piece in self.pieces]

    def fill(self, fills: list[str]) -> str:
        """The text with each mask replaced by its filling."""
        if len(fills) != len(self.masks):
            raise ValueError(f"{len(fills)} fillings for {len(self.masks)} masks")
        out = [self.pieces[0]]
        for fill, piece in zip(fills, self.pieces[1:]):
            out.append(fill)
            out.append(piece)
        return "".join(out)


def parse_masked_text(text: str) -> MaskedText:
    """Split a text into literal pieces and masks; raises MaskSyntaxError with a one-line reason."""
    if not text:
        raise MaskSyntaxError("empty text")
    pieces: list[str] = []
    masks: list[Optional[int]] = []
    cursor = 0
    for found in _MASK_START.finditer(text):
        start = found.start()
        if text.startswith(MASK_TOKEN, start):
            length, stop = None, start + len(MASK_TOKEN)
        else:
            sized = _SIZED_MASK.match(text, start)
            if sized is None:
                snippet = text[start:start + 16]
                raise MaskSyntaxError(f"malformed mask {snippet!r} at character {start} "
                                      "(write [MASK] or [MASK:n] with n a number of bytes)")
            digits = sized.group(1)
            if len(digits.lstrip("0")) > MAX_MASK_DIGITS:
                raise MaskSyntaxError(f"[MASK:{digits}] at character {start} asks for far more bytes than "
                                      "any model can fill")
            length, stop = int(digits), sized.end()
            if length == 0:
                raise MaskSyntaxError(f"[MASK:{digits}] at character {start} masks no bytes (n must be at least 1)")
        pieces.append(text[cursor:start])
        masks.append(length)
        cursor = stop
    if not masks:
        raise MaskSyntaxError("no [MASK] or [MASK:n] in the text")
    pieces.append(text[cursor:])
    return MaskedText(text=text, pieces=tuple(pieces), masks=tuple(masks))


@dataclass(frozen=True)
class BadLine:
    """A line of input that could not be read as text, and why."""

    number: int
    problem: str


def read_text_lines(stream: BinaryIO) -> Iterator[tuple[int, Union[str, BadLine]]]:
    """Yield (line number from 1, text or BadLine) for each line of a byte stream, lazily.

    Lines end at \\n (a trailing \\r is dropped); a UTF-8 byte-order mark on the first line is dropped.
    """
    for number, raw in enumerate(stream, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, BadLine(number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte offset {exc.start})")
