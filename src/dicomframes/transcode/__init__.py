"""Writing new files from old ones: the dataset writer (elements copied by range, the few
changed ones encoded anew) and `decompress`."""
