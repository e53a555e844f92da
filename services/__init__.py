"""The test-data agent: one sub-package per deployable, `core` (pure) and `kit` (shared edges).

gRPC's fork support is off in every process of ours (unless the environment says
otherwise), before anything imports grpc: with it on, a child forked by a process that runs
gRPC (a supervisor's service, the broker, a test's `testdata run`: `preexec_fn` makes
Popen fork) restarts gRPC's poller thread, whose epoll fd Popen already closed; the child
aborts (SIGABRT) before it can exec. None of our processes uses gRPC across a fork.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
