"""Error types. Each carries the exit code (CLI) or HTTP status (server) it maps to."""


class DogbreedError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1
    http_status = 500


class ConfigError(DogbreedError):
    """A flag, hyperparameter or environment value is missing or malformed."""

    exit_code = 2
    http_status = 400


class DataError(DogbreedError):
    """The dataset tree is missing, inconsistent or mostly unreadable."""

    exit_code = 3


class ModelError(DogbreedError):
    """Weights or a model directory cannot be loaded or built."""

    exit_code = 4


class DownloadError(DogbreedError):
    """A download failed or its result did not verify."""

    exit_code = 5


class ImageError(DogbreedError):
    """Bytes that are not a decodable image (a client error when serving)."""

    exit_code = 6
    http_status = 400


class ImageTooLargeError(ImageError):
    """An image over the pixel limit (decompression-bomb guard)."""

    http_status = 413
