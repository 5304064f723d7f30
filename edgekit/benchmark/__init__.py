"""On-device latency: the harness that runs on the device, benchmark_model's parser, and the host-side runner."""
