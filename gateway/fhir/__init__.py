"""The FHIR R4 face of the gateway (`/fhir/R4/...`): the same services as the REST API,
spoken in FHIR resources built and validated by `fhir.resources` (docs/fhir.md)."""
