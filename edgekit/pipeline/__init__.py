"""The pipelines that chain the stages: `edgekit run` (one recipe) and `edgekit sweep` (a grid of them)."""
