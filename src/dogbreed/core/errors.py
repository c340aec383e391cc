"""Every error type of the package, and the two mappings that turn one into an answer.

Each class carries the exit code a command ends with and the HTTP status the
endpoint answers. `exit_code(exc)` and `http_status(exc)` are the one place
those are read; anything that is not a DogbreedError is a bug (exit 1 / 500).
The standalone Lambda function keeps its own small error class: it ships as one
file with no dependency on this package.
"""

from __future__ import annotations


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


class EndpointError(DogbreedError):
    """A running endpoint server did not answer, or answered an error."""

    exit_code = 7


class ServerError(DogbreedError):
    """The model server could not start, or stopped on its own."""

    exit_code = 9


class AwsError(DogbreedError):
    """An AWS API call failed (the message carries the service, call and error code)."""

    exit_code = 8


# ---- request errors of the endpoint (their exit code is never used) -------------------------


class RequestError(DogbreedError):
    """A malformed request."""

    http_status = 400


class PayloadTooLargeError(DogbreedError):
    """A request over the size or instance limit."""

    http_status = 413


class UnsupportedMediaTypeError(DogbreedError):
    """A Content-Type the endpoint does not take."""

    http_status = 415


class NotAcceptableError(DogbreedError):
    """An Accept header the endpoint cannot answer."""

    http_status = 406


INTERRUPTED_EXIT = 130  # Ctrl-C, as a shell reports it


def exit_code(exc: BaseException) -> int:
    """The exit code a command ends with for this exception."""
    if isinstance(exc, DogbreedError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT
    return 1


def http_status(exc: BaseException) -> int:
    """The HTTP status the endpoint answers for this exception (500: a bug of ours)."""
    return exc.http_status if isinstance(exc, DogbreedError) else 500
