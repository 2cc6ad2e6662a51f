"""Query expansion on a plain encoder: exact MaxSim nDCG@10 on SciFact with queries padded with [MASK] and not.

    python -m benchmarks.query_expansion

The same cached document vectors (``benchmarks.lib.scifact``) and the 809 judged train queries,
encoded twice by the same MiniLM encoder: padded with ``[MASK]`` to 32 tokens and those vectors kept
(ColBERT's query augmentation), and left as they are (what ``ColBERTEncoder`` now does for a plain
transformers encoder). Each set is ranked by exhaustive exact MaxSim, so the difference is the
queries' alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib.exhaustive import ExhaustiveMaxSim
from benchmarks.lib.metrics import ndcg_at_k
from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.scifact import add_scifact_arguments, load_scifact_vectors
from benchmarks.lib.timing import use_search_threads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scifact_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "query_expansion.json")
    args = parser.parse_args(argv)
    use_search_threads()
    rows: dict[str, Any] = {}
    exhaustive = None
    for expanded in (True, False):
        vectors = load_scifact_vectors(args.cache, data_dir=args.data, query_expansion=expanded)
        if exhaustive is None:
            exhaustive = ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets)
        queries = vectors.queries()
        ndcg = [ndcg_at_k([doc for doc, _ in exhaustive.search(query, 10)], vectors.qrels[query_id], 10)
                for query, query_id in zip(queries, vectors.query_ids)]
        label = "padded with [MASK] to 32 tokens" if expanded else "not padded"
        rows[label] = {"ndcg_at_10": float(np.mean(ndcg)), "queries": len(queries),
                       "mean_query_tokens": float(np.mean([len(query) for query in queries]))}
        print(label, rows[label], flush=True)
    table = markdown_table(["queries", "exact MaxSim nDCG@10", "query tokens (mean)", "queries"],
                           [[label, f"{row['ndcg_at_10']:.4f}", f"{row['mean_query_tokens']:.1f}", row["queries"]]
                            for label, row in rows.items()])
    save_results(args.out, {"rows": rows}, table)


if __name__ == "__main__":
    main()
