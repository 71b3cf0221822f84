"""What operators use: /metrics (Prometheus), /ready and /live (probes), and the stores timed at the edge."""
