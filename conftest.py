"""Root conftest: loads the notebook-figure plugin for nbval runs over book/."""

pytest_plugins = ["tools.nbfigures", "tools.nbtolerance"]
