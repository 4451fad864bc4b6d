"""Fixtures of the callback tests: the random Inception weights of the FID callback, and one
torch thread for the in-process training runs (as in tests/tasks)."""

from tests.metrics.conftest import inception_weights  # noqa: F401  (session fixture)
from tests.tasks.conftest import one_torch_thread  # noqa: F401  (autouse)
