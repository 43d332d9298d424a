"""The Triton model repository: typed config builders and the writer that lays it out."""
