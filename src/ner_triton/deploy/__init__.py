"""Operating a deployment: rollouts through Triton's repository API, and inputs for Triton's own tools."""
