"""``seas gallery``: review and curate a ``seas generate`` folder in a web browser.

:func:`serve` starts a local web server (standard library only) in a thread and returns it;
:func:`run_gallery` does the same and blocks until Ctrl-C. The page shows every generated
image with its mask, the real training pairs of the same type, and lets a person accept or
reject each pair; the decisions are saved in ``curation.json`` next to ``manifest.jsonl``
(:mod:`seas.generation.curation` reads them back).
"""

from __future__ import annotations

from seas.gallery.server import DEFAULT_HOST, DEFAULT_PORT, GalleryServer, run_gallery, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "GalleryServer", "run_gallery", "serve"]
