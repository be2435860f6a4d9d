"""Benchmarks of App Supervisor: ``bin/bench [--quick]`` (``python -m bench``) rewrites docs/benchmarks.md."""
