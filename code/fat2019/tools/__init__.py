"""What the measuring tools in code/tools/ share: the benchmarks (bench/) and the full-size
rehearsal (rehearsal/). The pipeline never imports this package (tests/test_layout.py)."""
