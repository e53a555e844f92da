"""The gRPC bridge (`testdata service bridge`): each call a round trip through the topics."""
