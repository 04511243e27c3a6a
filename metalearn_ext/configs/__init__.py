"""Meta-training configs shipped with the package (YAML): ``quick`` (a 2-core CPU), ``paper`` (a GPU)."""
