pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.scepline",
    "tests.fixtures.rabbitmq",
    "tests.fixtures.softhsm",
]
