"""The URIs the FHIR face speaks: French identifier systems, and the gateway's own.

French systems are the ones the French FHIR core guide (Interop'Santé / ANS) fixes;
where no French guide defines one (the AMC insurer number, the prestation code, the
invoice number, the amounts a claim splits between AMO and AMC), the system lives under
the gateway's own canonical base. Canonical URLs are names, not addresses: they need not
resolve, and never change (docs/fhir.md, "Identifier systems").
"""

from __future__ import annotations

FHIR_VERSION = "4.0.1"  # what the face declares; see docs/fhir.md, "Version"
MEDIA_TYPE = "application/fhir+json"
BASE_PATH = "/fhir/R4"

CANONICAL = "https://tiers-payant-gateway.example/fhir"

# French systems (FR Core)
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIR_TEST = "urn:oid:1.2.250.1.213.1.4.10"  # fictitious test identities
NIR_SYSTEMS = (INS_NIR, INS_NIR_TEST)
FINESS = "https://finess.esante.gouv.fr"
RPPS = "https://rpps.esante.gouv.fr"
CIP = "urn:oid:1.2.250.1.213.2.3.2"  # Code Identifiant de Présentation (CIP13)

# HL7 terminology
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
PROCESS_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"

# The gateway's own
AMC_INSURER = f"{CANONICAL}/sid/amc-insurer-number"
INVOICE = f"{CANONICAL}/sid/invoice-number"
CLAIM_ID = f"{CANONICAL}/sid/claim-id"
PRESTATION = f"{CANONICAL}/CodeSystem/prestation"
CARD_FIELD = f"{CANONICAL}/CodeSystem/amc-card-field"  # Coverage.class types
REJECTION = f"{CANONICAL}/CodeSystem/rejection"
BENEFIT = f"{CANONICAL}/CodeSystem/benefit"
ERROR = f"{CANONICAL}/CodeSystem/error"
BASE_AMOUNT = f"{CANONICAL}/StructureDefinition/base-amount"
AMO_AMOUNT = f"{CANONICAL}/StructureDefinition/amo-amount"
AMC_AMOUNT = f"{CANONICAL}/StructureDefinition/amc-amount"
RECEIPT = f"{CANONICAL}/StructureDefinition/provisional-receipt"
RIGHTS_SOURCE = f"{CANONICAL}/StructureDefinition/rights-source"
