"""The RAG generation path (its own deployable: `testdata service rag`)."""
