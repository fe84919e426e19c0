"""Hand-over of queued claims as signed, encrypted batch files, for an operator that is
back with batch intake only (docs/handover.md): export, acknowledgements, release."""
