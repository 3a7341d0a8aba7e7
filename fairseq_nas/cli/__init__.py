"""`fairseq-nas` command line: thin wrappers over the packages; see `main.SUBCOMMANDS`."""
