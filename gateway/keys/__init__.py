"""API keys as operations see them: suspensions over a rights budget, and their lifting."""
