"""The package's exception hierarchy: library code raises these, only `vidlat.cli` prints them."""


class VidlatError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class ConfigError(VidlatError):
    """A config file or flag is missing, unknown, or of the wrong type."""


class DataError(VidlatError):
    """Input videos or source files are malformed (rank, dtype, NaN, sizes, file format)."""


class StoreError(VidlatError):
    """A latent or video store is missing, incomplete, of another format version, or mismatched."""


class CheckpointError(VidlatError):
    """A checkpoint is missing, unreadable, or belongs to another model or encoder."""


class TrainingError(VidlatError):
    """Training cannot go on: a loss became NaN or infinite (the run diverged)."""
