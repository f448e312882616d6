"""Benchmark suites (commands print numbers; they are not tests)."""
