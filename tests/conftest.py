import subprocess
import sys

import pytest


def run_edgekit(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def edgekit_cli():
    return run_edgekit
