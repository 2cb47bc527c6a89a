"""The one exception type that users cause, and how it names where the problem is."""

from __future__ import annotations

from pathlib import Path


class WellreadError(Exception):
    """An error caused by input the user gave (a path, a file's content, a name, a flag).

    The CLI prints ``str(error)`` as one line and exits non-zero. ``file``, ``line`` and ``field``
    say where the problem is, when known; they are folded into the message.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
        if self.field is not None:
            where = f"{where} (field {self.field})" if where else self.field
        return f"{where}: {self.message}" if where else self.message
