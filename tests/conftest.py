pytest_plugins = ["tests.harness.nats", "tests.harness.fixtures", "tests.harness.db"]
