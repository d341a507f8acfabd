"""Package data: the files ``kubeedge mapper new NAME`` writes (``+`` in a name is a folder separator)."""
