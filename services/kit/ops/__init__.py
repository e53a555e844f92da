"""Operating a process: health and metrics over HTTP, logs, process state, restarts."""
