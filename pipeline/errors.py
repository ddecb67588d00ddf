"""The one error type a stage raises for bad input or configuration; the CLI turns it into a clear message."""


class PipelineError(Exception):
    """A problem the user can fix: says what went wrong, where, and how to fix it.

    The CLI prints `error: <what>` plus the `hint` and exits non-zero, without a traceback.
    """

    def __init__(self, what: str, *, hint: str | None = None, exit_code: int = 2):
        super().__init__(what)
        self.what = what
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.what if not self.hint else f"{self.what}\n  how to fix: {self.hint}"


class ValidationFailed(PipelineError):
    """The data-quality gate rejected the data. Terminal: retrying cannot help."""

    def __init__(self, what: str, *, hint: str | None = None):
        super().__init__(what, hint=hint, exit_code=3)
