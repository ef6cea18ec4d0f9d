"""Where files live: the :class:`Storage` interface and its backends."""

from .base import DIRECTORY, FILE, LINK, OTHER, BlockList, Download, Entry, Storage, TreeEntry, Upload, Usage
from .local import LocalStorage

__all__ = [
    "DIRECTORY",
    "FILE",
    "LINK",
    "OTHER",
    "BlockList",
    "Download",
    "Entry",
    "LocalStorage",
    "Storage",
    "TreeEntry",
    "Upload",
    "Usage",
]
