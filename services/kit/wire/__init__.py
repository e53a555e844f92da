"""The wire contract: topic names, headers, codecs, message types, chunk signing and tenancy."""
