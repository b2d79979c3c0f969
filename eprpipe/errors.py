"""One exception family for everything a user can get wrong, so callers catch one type."""

from __future__ import annotations


class EprError(Exception):
    """Base class of every error eprpipe raises on purpose; the CLI prints it as one line."""


class FormatError(EprError):
    """An .epr file breaks the container format: names the file part and byte offset."""

    def __init__(self, message: str, *, section: str | None = None, offset: int | None = None):
        where = []
        if section is not None:
            where.append(f"section {section}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.section = section
        self.offset = offset


class PluginError(EprError):
    """A plugin registered something invalid, or a name is unknown or taken twice."""


class DataError(EprError):
    """A dataset's files are missing, unreadable or do not match their checksum."""
