"""The certs package's one exception root.

Tree::

    CertError        a request the factory cannot honour (bad name, bad TLSA
                     parameters, inconsistent bundle input); the message
                     quotes the offending value with ``!r``
"""

from __future__ import annotations

__all__ = ["CertError"]


class CertError(Exception):
    """Anything a caller of :mod:`certs` can get wrong.

    Attributes:
        value: the offending value, or None.
    """

    def __init__(self, message: str, *, value: object = None) -> None:
        self.value = value
        super().__init__(message)
