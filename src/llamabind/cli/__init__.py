"""Layer 4: the ``llamabind`` command line. One module per subcommand in ``commands/``."""
