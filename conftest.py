pytest_plugins = ["notify_common.testing.pytest_plugin"]
