pytest_plugins = [
    "tests.harness.nats",
    "tests.harness.fixtures",
    "tests.harness.db",
    "tests.harness.gitrepo",
    "tests.harness.system",
]
