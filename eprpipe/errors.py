"""One exception family for everything a user can get wrong, so callers catch one type."""

from __future__ import annotations


class EprError(Exception):
    """Base class of every error eprpipe raises on purpose; the CLI prints it as one line."""


class FormatError(EprError):
    """An .epr file breaks the container format: names the file part and byte offset.

    `code` is the stable name of the broken rule (spec/FORMAT.md, "Error codes"), so tools and
    other implementations can match errors without parsing messages.
    """

    def __init__(
        self,
        message: str,
        *,
        section: str | None = None,
        offset: int | None = None,
        code: str = "invalid",
    ):
        where = []
        if section is not None:
            where.append(f"section {section}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.message = message
        self.section = section
        self.offset = offset
        self.code = code

    def located(self, source: str) -> FormatError:
        """The same error with the file it came from in front of the message."""
        return FormatError(
            f"{source}: {self.message}", section=self.section, offset=self.offset, code=self.code
        )


class PluginError(EprError):
    """A plugin registered something invalid, or a name is unknown or taken twice."""


class DataError(EprError):
    """A dataset's files are missing, unreadable or do not match their checksum."""
