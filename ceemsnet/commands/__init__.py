"""One module per `ceemsnet` subcommand: its parser and what it runs."""
