"""Tasks as item pipelines (one module per task), the engines that run them, and how results are reported."""
