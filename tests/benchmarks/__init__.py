"""Benchmarks: run with ``make bench``. Not collected by pytest; they measure, never assert."""
