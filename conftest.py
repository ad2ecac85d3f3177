"""Repository-level pytest configuration: enables ``pytester`` for plugin tests."""

pytest_plugins = ["pytester"]
