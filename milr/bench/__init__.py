"""Benchmark harness: suites, resumable sharded runs, summaries and reports."""
