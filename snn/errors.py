"""One exception family for everything a user can cause (DESIGN.md, rule 5)."""


class SnnError(Exception):
    """Base class of every error a user can cause; the CLI prints it as one line, exit code 2."""


class ConversionError(SnnError):
    """A model (or one of its layers) cannot be traced or converted."""


class ConfigError(SnnError):
    """An experiment configuration is invalid; the message names the key path."""


class DataError(SnnError):
    """A dataset is missing, corrupt, or fails its checksum."""


class MissingExtra(SnnError):
    """An optional dependency is not installed; the message names the extra that brings it
    (``pip install 'snn[ray]'``; in a clone: ``pip install -e '.[ray]'``)."""

    def __init__(self, what: str, extra: str, package: str) -> None:
        super().__init__(f"{what} needs {package}, which is not installed: pip install 'snn[{extra}]' "
                         f"(in a clone: pip install -e '.[{extra}]')")
        self.extra = extra
