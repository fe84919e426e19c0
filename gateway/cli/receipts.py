"""`gateway receipt verify TOKEN`: check a receipt offline (docs/integration.md).

Exit 0 when the receipt is authentic (the status line says valid or expired), 1 with
`error: <reason>` on stderr when it is not, or when the keys cannot be had.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from gateway.cli.support import ConfigOption, fail, settings_or_exit
from gateway.receipts.signing import InvalidReceipt, ReceiptSigner, verify
from gateway.security.keyring import load_keyring
from gateway.settings import ConfigError

JWKS_TIMEOUT_S = 5.0

receipt_app = typer.Typer(help="Provisional coverage receipts.", no_args_is_help=True)


@receipt_app.callback()
def _receipt() -> None:
    """Provisional coverage receipts."""  # keeps `verify` a subcommand with a lone command


def _configured_jwks(config: Path | None) -> dict[str, Any]:
    """The keys this gateway publishes, derived from its configuration."""
    settings = settings_or_exit(config)
    try:
        keyring = load_keyring(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    return ReceiptSigner(keyring.signing_key, keyring.previous_signing_keys).jwks()


def _read_jwks(source: str) -> dict[str, Any]:
    """A JWKS from a file, or fetched over HTTP(S)."""
    try:
        if source.startswith(("http://", "https://")):
            response = httpx.get(source, timeout=JWKS_TIMEOUT_S, follow_redirects=True)
            response.raise_for_status()
            document = response.json()
        else:
            document = json.loads(Path(source).read_text(encoding="utf-8"))
    except httpx.HTTPError as exc:
        raise fail(f"jwks: {type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise fail(f"jwks: {exc}") from None
    except ValueError as exc:
        raise fail(f"jwks: not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise fail("jwks: not a key set (expected an object with a 'keys' list)")
    return document


@receipt_app.command("verify")
def verify_command(
    token: Annotated[str, typer.Argument(help="the receipt token (compact JWS)")],
    jwks: Annotated[
        str | None,
        typer.Option("--jwks", help="JWKS file or http(s) URL (default: the configured keys)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check a receipt's signature offline, with the published keys."""
    key_set = _read_jwks(jwks) if jwks else _configured_jwks(config)
    try:
        receipt = verify(token.strip(), key_set)
    except InvalidReceipt as exc:
        raise fail(f"invalid receipt: {exc}") from None
    typer.echo(json.dumps(receipt.payload, indent=2, ensure_ascii=False, sort_keys=True))
    typer.echo("status: expired (authentic, past its expiry)" if receipt.expired
               else "status: valid")
