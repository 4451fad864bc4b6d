"""The ``cuda`` marker for this directory's tests (until pyproject.toml registers it)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
