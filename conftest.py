"""Root conftest: the cluster fixtures (tests/cluster.py) serve both tests/integration and e2e/
from one plugin, so a session that runs both starts one control plane, not two."""

pytest_plugins = ["tests.cluster"]
