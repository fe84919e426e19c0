"""`gateway demo`: simulated operators, sample people and the console's demo panel."""
