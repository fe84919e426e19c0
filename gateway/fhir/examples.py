"""The request examples of /openapi.json: the Claim and CoverageEligibilityRequest of
docs/fhir.md, the same objects (tests/unit/test_fhir_docs.py holds them equal, and parses
them with the model library), so that the API description and the page never disagree."""

from __future__ import annotations

from typing import Any

PATIENT: dict[str, Any] = {  # the beneficiary, contained in both requests
    "resourceType": "Patient",
    "id": "patient",
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "185077511512396"}],
    "name": [{"use": "official", "family": "Martin", "given": ["Claire"]}],
    "birthDate": "1985-07-14",
    "multipleBirthInteger": 1,
}

CARD: dict[str, Any] = {  # the AMC card, contained in both requests
    "resourceType": "Coverage",
    "id": "coverage",
    "status": "active",
    "beneficiary": {"reference": "#patient"},
    "subscriberId": "A123456",
    "payor": [
        {
            "identifier": {
                "system": "https://tiers-payant-gateway.example/fhir/sid/amc-insurer-number",
                "value": "801234567",
            }
        }
    ],
    "period": {"start": "2026-01-01", "end": "2026-12-31"},
}

CLAIM: dict[str, Any] = {
    "resourceType": "Claim",
    "contained": [
        PATIENT,
        {
            "resourceType": "Organization",
            "id": "pharmacy",
            "identifier": [{"system": "https://finess.esante.gouv.fr", "value": "330001231"}],
        },
        {
            "resourceType": "Practitioner",
            "id": "prescriber",
            "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": "10001234565"}],
        },
        {
            **CARD,
            "class": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "https://tiers-payant-gateway.example/fhir/CodeSystem/amc-card-field",
                                "code": "convention-type",
                            }
                        ]
                    },
                    "value": "TP",
                }
            ],
        },
    ],
    "identifier": [
        {
            "system": "https://tiers-payant-gateway.example/fhir/sid/invoice-number",
            "value": "D261129025120",
        }
    ],
    "status": "active",
    "type": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "pharmacy"}
        ]
    },
    "use": "claim",
    "patient": {"reference": "#patient"},
    "created": "2026-11-28",
    "provider": {"reference": "#pharmacy"},
    "priority": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}
        ]
    },
    "careTeam": [{"sequence": 1, "provider": {"reference": "#prescriber"}}],
    "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "#coverage"}}],
    "item": [
        {
            "sequence": 1,
            "extension": [
                {
                    "url": "https://tiers-payant-gateway.example/fhir/StructureDefinition/base-amount",
                    "valueMoney": {"value": 8.0, "currency": "EUR"},
                },
                {
                    "url": "https://tiers-payant-gateway.example/fhir/StructureDefinition/amo-amount",
                    "valueMoney": {"value": 5.2, "currency": "EUR"},
                },
                {
                    "url": "https://tiers-payant-gateway.example/fhir/StructureDefinition/amc-amount",
                    "valueMoney": {"value": 2.8, "currency": "EUR"},
                },
            ],
            "category": {
                "coding": [
                    {
                        "system": "https://tiers-payant-gateway.example/fhir/CodeSystem/prestation",
                        "code": "PH7",
                    }
                ]
            },
            "productOrService": {
                "coding": [{"system": "urn:oid:1.2.250.1.213.2.3.2", "code": "3400935955838"}]
            },
            "servicedDate": "2026-11-28",
            "quantity": {"value": 1},
            "unitPrice": {"value": 8.0, "currency": "EUR"},
        }
    ],
}

ELIGIBILITY_REQUEST: dict[str, Any] = {
    "resourceType": "CoverageEligibilityRequest",
    "contained": [
        PATIENT,
        CARD,
    ],
    "status": "active",
    "purpose": ["validation"],
    "patient": {"reference": "#patient"},
    "servicedDate": "2026-11-28",
    "created": "2026-11-28",
    "insurer": {
        "identifier": {
            "system": "https://tiers-payant-gateway.example/fhir/sid/amc-insurer-number",
            "value": "801234567",
        }
    },
    "insurance": [{"focal": True, "coverage": {"reference": "#coverage"}}],
}
