"""The RAG generation path (`testdata service rag`); its public face is the retrieval that
hybrid composes."""

from services.rag.retrieval import UsageMarker, retrieve

__all__ = ["UsageMarker", "retrieve"]
