"""hoprank.agents."""
