"""Speed and memory benchmarks; run each as `python -m benchmarks.<name>` from the repo root."""
