"""The analyzers shipped with lossatlas, one module per method.

They are found the same way as third-party analyzers: through the entry-point
group ``lossatlas.methods`` (see pyproject.toml). ``available()`` lists names.
"""
from lossatlas.registry import available, get

__all__ = ["available", "get"]
