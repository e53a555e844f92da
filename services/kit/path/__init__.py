"""The path base every generation path extends: a run per attempt, its lease and cache."""
