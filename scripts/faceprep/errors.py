"""Every error the package raises on purpose: each message names the file, and the record,
image, line or config key where it applies. A rule's log and Snakemake's output show it as is."""


class ConfigError(ValueError):
    """A config problem; the message names the key."""


class RecordIOError(ValueError):
    """Malformed RecordIO input; the message names the file and the key or offset."""


class DatasetError(ValueError):
    """A dataset that is not what its header, index or property file promise."""


class BinError(ValueError):
    """A bad evaluation bin; the message names the file and, where it applies, the image and pair."""


class OutputError(OSError):
    """An output path the workflow will not write through: a link or a foreign entry where
    it writes its own file or directory, a directory another working copy owns, or bytes
    of a file that another process holds a lock on."""
