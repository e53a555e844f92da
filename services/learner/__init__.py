"""The learner: successful datasets from the outcomes topic become patterns."""
