"""hoprank.evals."""
