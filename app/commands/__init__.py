"""One module per ``loadshape`` subcommand; see ``app.cli``."""
