"""Many processes on one index: writer, searcher and retrainer processes that log what they were told,
and a checker that holds the store's final state and every search against those logs.

Shared by the concurrency tests (``tests/test_concurrent_writers.py``) and the soak benchmark
(``benchmarks/soak.py``).
"""
