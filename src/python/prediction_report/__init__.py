"""The prediction log's reader (`./pants prediction-report -- --help`), no third-party package.

`report` parses and aggregates the lines the gateway's prediction log writes
(docs/prediction-log.md); `main` is the command.
"""
