"""hoprank.tools."""
