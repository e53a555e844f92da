"""The router (`testdata service router`): admits each request, picks its path and says why."""
