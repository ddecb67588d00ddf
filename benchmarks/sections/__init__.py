"""One module per benchmark section; each `run(...)` returns a harness.Section, and a missing input makes it
skip with the reason instead of failing.

  1 csv_ingest            2 gate_vs_naive_gx     3 training_throughput   4 inference_speed
  5 noop_rerun            6 stage_times          7 gate_full_data        8 parallel_stages
  9 serving

The order, titles and flags are benchmarks/__main__.py's; shared inputs are benchmarks/data.py's.
"""
