"""Code the benchmark entry points share: data, timing, metrics, tables, the PLAID environment.

Nothing here runs on its own; ``benchmarks/README.md`` lists the entry points.
"""
