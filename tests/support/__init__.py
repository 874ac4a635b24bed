"""Helpers and fixtures the test tiers share (tiers never import each other's modules).

What the benchmarks and fault scenarios also use lives in :mod:`cocov_jobs.testing` instead.
"""
