"""The overhead benchmark: what the stack adds on top of the upstream (issue #7, SPEC §9).

Run it with `make bench` (`python -m bench`), or `make bench-soak` for the memory soak. See
bench/README.md for the method and the latest numbers.
"""
