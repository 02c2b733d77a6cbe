"""Bytes at an offset, from wherever the file lives: the `Source` contract and its kinds,
the read cursor and block cache, inflated streams, retries, and input resolution."""
