"""`make demo`: the seed story end to end on this one host, on embedded defaults."""
