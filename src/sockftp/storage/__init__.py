"""Where files live: the :class:`Storage` interface and its backends."""

from .base import DIRECTORY, FILE, LINK, OTHER, Download, Entry, Storage, Upload, Usage
from .local import LocalStorage

__all__ = ["DIRECTORY", "FILE", "LINK", "OTHER", "Download", "Entry", "LocalStorage", "Storage", "Upload", "Usage"]
