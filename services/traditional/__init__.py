"""The traditional generation path (its own deployable: `testdata service traditional`)."""
