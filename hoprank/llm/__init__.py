"""hoprank.llm."""
