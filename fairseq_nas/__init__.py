"""fairseq-nas."""
