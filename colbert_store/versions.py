"""An index's committed state: its manifest (settings and which codecs are live), and how it changes.

Every change of the manifest is a compare-and-set on its ``version`` (:meth:`Store.replace_manifest`),
so concurrent processes cannot both apply one: two first adds train one codec between them, and two
retrains cannot overlap. Codecs are immutable blobs under random ids; the manifest only names them.

A retrain moves the stored documents to a new codec *in place*, while writers and readers go on:

1. the new codec becomes ``current`` and the old one ``retiring``: writers encode with the new codec
   from their next manifest read, and a write made with the retiring one is still accepted;
2. every stored document of another generation is re-encoded with the current codec by a
   conditional write that applies only if the document is still the version that was read
   (a concurrent replace or delete wins), until a scan finds none;
3. the retiring codec stops being accepted (``closing``), and the sweep runs again;
4. it becomes ``retired``: still decodable, so a document written by a writer that was stopped
   between its write and its check stays searchable until the next retrain re-encodes it.

A writer, after writing, reads the manifest again: if its documents' codec is no longer accepted,
it re-encodes them itself, by the same conditional write. So an acknowledged write was either seen
by a sweep of step 3 (it was written before ``closing`` was committed) or re-encoded by its writer:
no acknowledged document is ever left with a codec the index no longer holds. A searcher decodes
every candidate with the codec of its generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from colbert_store.codec import ResidualCodec
from colbert_store.errors import ColbertStoreError, IncompatibleIndexError
from colbert_store.settings import IndexSettings
from colbert_store.storage import FORMAT_VERSION, GENERATIONS, Store

_LOAD_ATTEMPTS = 8


@dataclass(frozen=True)
class CodecRef:
    """One codec of an index: the generation its documents' revisions carry, and its stored id."""

    generation: int
    codec_id: str


@dataclass(frozen=True)
class CodecState:
    """Which codecs an index holds (module docstring): ``None`` current before the first training."""

    current: CodecRef | None = None
    retiring: CodecRef | None = None
    closing: bool = False
    retired: tuple[CodecRef, ...] = ()

    @property
    def decodable(self) -> tuple[CodecRef, ...]:
        """Every codec a stored document may still be encoded with."""
        return tuple(ref for ref in (self.current, self.retiring, *self.retired) if ref is not None)

    def accepts(self, generation: int) -> bool:
        """Whether a document written with this generation's codec may stay as it is."""
        if self.current is not None and self.current.generation == generation:
            return True
        return self.retiring is not None and not self.closing and self.retiring.generation == generation

    def to_json(self) -> dict[str, Any]:
        def ref(value: CodecRef | None) -> dict[str, Any] | None:
            return None if value is None else {"generation": value.generation, "codec_id": value.codec_id}

        return {
            "current": ref(self.current),
            "retiring": ref(self.retiring),
            "closing": self.closing,
            "retired": [ref(value) for value in self.retired],
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> CodecState:
        def ref(value: Mapping[str, Any] | None) -> CodecRef | None:
            return None if value is None else CodecRef(int(value["generation"]), str(value["codec_id"]))

        return cls(
            current=ref(values.get("current")),
            retiring=ref(values.get("retiring")),
            closing=bool(values.get("closing", False)),
            retired=tuple(r for r in map(ref, values.get("retired", [])) if r is not None),
        )


@dataclass(frozen=True)
class Manifest:
    """What the store keeps about an index besides its documents and codecs."""

    settings: IndexSettings
    codecs: CodecState = field(default_factory=CodecState)
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "settings": self.settings.to_json(),
            "codecs": self.codecs.to_json(),
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Manifest:
        """Parse a stored manifest; another format version raises :class:`IncompatibleIndexError`."""
        found = values.get("format_version")
        if found != FORMAT_VERSION:
            raise IncompatibleIndexError(
                f"index format version {found!r} is not supported by this colbert-store (expects {FORMAT_VERSION}); "
                "rebuild the index with this version"
            )
        return cls(IndexSettings.from_json(values["settings"]), CodecState.from_json(values["codecs"]), int(values["version"]))

    def next(self, codecs: CodecState, settings: IndexSettings | None = None) -> Manifest:
        """The manifest that commits ``codecs`` (and ``settings``, when given) one version later."""
        return replace(self, codecs=codecs, settings=settings or self.settings, version=self.version + 1)


@dataclass(frozen=True)
class LoadedState:
    """A manifest and its decodable codecs, loaded (codecs by id; they never change once written)."""

    manifest: Manifest
    codecs: Mapping[str, ResidualCodec]

    @property
    def current(self) -> CodecRef | None:
        return self.manifest.codecs.current

    @property
    def current_codec(self) -> ResidualCodec | None:
        current = self.manifest.codecs.current
        return None if current is None else self.codecs[current.codec_id]

    def by_generation(self) -> dict[int, ResidualCodec]:
        """Each decodable codec under the generation its documents' revisions carry (modulo 256)."""
        return {ref.generation % GENERATIONS: self.codecs[ref.codec_id] for ref in self.manifest.codecs.decodable}


def load_state(store: Store, name: str, previous: LoadedState | None = None) -> LoadedState:
    """Read the manifest and load the codecs it names (reusing those ``previous`` already holds).

    A codec named by a manifest this reader saw can be deleted once a later manifest no longer names
    it; the manifest is then read again.
    """
    known = previous.codecs if previous is not None else {}
    for _ in range(_LOAD_ATTEMPTS):
        manifest = Manifest.from_json(store.read_manifest(name))
        if previous is not None and previous.manifest.version == manifest.version:
            return previous
        try:
            codecs = {
                ref.codec_id: known.get(ref.codec_id) or ResidualCodec.from_bytes(store.read_codec(name, ref.codec_id))
                for ref in manifest.codecs.decodable
            }
        except KeyError:
            continue
        return LoadedState(manifest, codecs)
    raise ColbertStoreError(f"the codecs of index {name!r} kept changing while being read; try again")


def commit(
    store: Store, name: str, state: LoadedState, codecs: CodecState, settings: IndexSettings | None = None
) -> Manifest | None:
    """Commit ``codecs`` (and new ``settings``) over ``state``'s manifest; ``None`` when another process committed first."""
    manifest = state.manifest.next(codecs, settings)
    return manifest if store.replace_manifest(name, manifest.to_json(), expected_version=state.manifest.version) else None
