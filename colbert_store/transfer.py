"""Moving an index between stores: its manifest, codecs and encoded documents, copied as they are."""

from __future__ import annotations

from colbert_store.storage import Store
from colbert_store.validation import check_index_name
from colbert_store.versions import Manifest


def copy_index(source: Store, target: Store, name: str, *, target_name: str | None = None, batch_size: int = 1024) -> None:
    """Copy index ``name`` of ``source`` into ``target`` (as ``target_name``, default the same name):
    e.g. from a Qdrant Edge folder to a Qdrant server, or from LanceDB to Qdrant. Nothing is re-encoded.

    Copy an index no one writes to meanwhile: documents written to the source during the copy may be
    missing from the target. The target index is created first (IndexExistsError if it exists); a copy
    that fails midway leaves it holding only part of the documents, so drop it and copy again.
    """
    target_name = check_index_name(target_name or name)
    manifest = source.read_manifest(check_index_name(name))
    codecs = Manifest.from_json(manifest).codecs.decodable  # refuses a manifest of another format
    target.create_index(target_name, manifest)
    for ref in codecs:
        target.write_codec(target_name, ref.codec_id, source.read_codec(name, ref.codec_id))
    for batch in source.scan(name, batch_size):
        target.upsert(target_name, batch)
    target.settle(target_name)
