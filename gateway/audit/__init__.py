"""The audit trail, its signed heads and the anchors they are exported to."""
