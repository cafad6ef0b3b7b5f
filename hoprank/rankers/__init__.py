"""hoprank.rankers."""
