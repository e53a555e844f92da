"""The hybrid generation path, retrieval plus the LLM (`testdata service hybrid`)."""
