"""Encode SciFact once into the cached 128-d token vectors every SciFact benchmark reads.

    python -m benchmarks.scifact_vectors --data ../shared/data/scifact --out ~/.cache/colbert-store/scifact

MiniLM token vectors reduced to 128-d by an uncentred PCA; the method and the cache's files are described
in ``benchmarks.lib.scifact``. Any benchmark builds a missing cache itself; this command only builds it
ahead (or again, with ``--force``) and prints its ``meta.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from benchmarks.lib.paths import DEFAULT_CACHE_DIR, default_data_dir
from benchmarks.lib.scifact import build_scifact_vectors, is_cache_complete, load_scifact_vectors

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Build (or reuse) the cache and print its metadata."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="SciFact BEIR folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE_DIR, help="cache folder")
    parser.add_argument("--dim", type=int, default=128, help="PCA output dimension")
    parser.add_argument("--pca-docs", type=int, default=1500, help="documents whose tokens feed the PCA")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is complete")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = args.out.expanduser()
    if args.force or not is_cache_complete(out):
        build_scifact_vectors(
            args.data or default_data_dir(), out, dim=args.dim, pca_docs=args.pca_docs, batch_size=args.batch_size,
            device=args.device,
        )
    else:
        logger.info("cache in %s is complete; use --force to rebuild", out)
    load_scifact_vectors(out, args.data)  # encodes the queries again when an older cache lacks a variant
    print(json.dumps(json.loads((out / "meta.json").read_text()), indent=1))


if __name__ == "__main__":
    main()
