"""Dataset jobs other than curation (captioning), with the same plan / parts / finalize lifecycle."""
