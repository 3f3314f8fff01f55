"""A bounded load test for any gateway URL (`./pants loadtest -- --help`), standard library only.

`load` is the command and its driver (`run`, `summary`); `loopback_image` serves the image the
gateway fetches, for the load test's callers (`measure_memory`, the container tests).
"""
