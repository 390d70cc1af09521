pytest_plugins = ["tests.servers.postgres", "tests.servers.s3"]
