"""One exception family for the .pnn container. Every error names where it happened.

    str(err) == "model.pnn: checksum mismatch in section 3 (tensor 'fc1.weight') at byte 1234"
"""

from __future__ import annotations

import os


class FormatError(ValueError):
    """A .pnn file (or a stream in one) is missing, damaged, hostile or not a .pnn file.

    Attributes: `path` (str or None), `section` (index, name or None), `tensor` (name or None),
    `offset` (absolute byte offset in the file, or None), `reason` (the bare message).
    """

    def __init__(self, reason: str, *, path: str | os.PathLike | None = None,
                 section: int | str | None = None, offset: int | None = None,
                 tensor: str | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        self.section = section
        self.offset = offset
        self.tensor = tensor
        super().__init__(self._compose())

    def _compose(self) -> str:
        text = self.reason
        if self.section is not None:
            text += f" in section {self.section}"
            if self.tensor is not None:
                text += f" (tensor {self.tensor!r})"
        elif self.tensor is not None:
            text += f" in tensor {self.tensor!r}"
        if self.offset is not None:
            text += f" at byte {self.offset}"
        if self.path is not None and not text.startswith(f"{self.path}:"):
            text = f"{self.path}: {text}"
        return text

    def located(self, *, path=None, section=None, offset=None, tensor=None) -> FormatError:
        """The same error (same class) with missing location fields filled in."""
        return type(self)(
            self.reason,
            path=self.path if self.path is not None else path,
            section=self.section if self.section is not None else section,
            offset=self.offset if self.offset is not None else offset,
            tensor=self.tensor if self.tensor is not None else tensor,
        )


class BadMagicError(FormatError):
    """The file does not start with the .pnn magic: not a .pnn file, or damaged in transfer."""


class UnsupportedVersionError(FormatError):
    """The file's major version (or a required feature) is unknown to this reader."""


class TruncatedError(FormatError):
    """The file or a stream ends before the data it announces."""


class LayoutError(FormatError):
    """Counts, offsets, lengths or limits are inconsistent, out of range or malformed."""


class ChecksumError(FormatError):
    """A CRC32 does not match: the bytes were changed after writing."""
