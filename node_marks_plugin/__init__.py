"""The node-marks provider plugin: labels and taints on shared nodes, and the rollout gate."""
