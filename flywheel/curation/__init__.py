"""Curation: ingest, decode once, score with the operators, decide, write accepted/rejected datasets."""
