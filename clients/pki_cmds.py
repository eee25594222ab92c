"""`juki pki …`: the deployment's CA, peer certificates and revocation list."""

from __future__ import annotations

import click

from clients.errors import CliError
from server.identity.pki import DEV_IDENTITIES, ROLES, Pki, load_revoked_serials
from server.settings import Settings


class PkiError(CliError):
    """One line on stderr ("Error: …"), exit status 2, never a traceback."""


@click.group()
def pki() -> None:
    """Create a CA, issue and revoke peer certificates, list them."""


@pki.command("init")
@click.option("--trust-domain", help="SPIFFE trust domain (default from settings)")
@click.pass_obj
def init(settings: Settings, trust_domain: str | None) -> None:
    """Create the CA (refuses when one exists)."""
    p = Pki(settings.pki_path)
    try:
        p.create_ca(trust_domain or settings.trust_domain)
    except (FileExistsError, ValueError) as exc:
        raise PkiError(str(exc)) from None
    click.echo(f"CA created in {p.directory}")


@pki.command("issue")
@click.argument("role", type=click.Choice(ROLES))
@click.argument("ident")
@click.option("--days", default=825, show_default=True, help="validity in days")
@click.option("--overwrite", is_flag=True, help="replace an existing certificate (the old one is revoked)")
@click.pass_obj
def issue(settings: Settings, role: str, ident: str, days: int, overwrite: bool) -> None:
    """Issue a certificate for spiffe://<trust-domain>/ROLE/IDENT (recorded in the issuance log)."""
    try:
        info = Pki(settings.pki_path).issue(role, ident, valid_days=days, overwrite=overwrite)
    except FileExistsError:
        raise PkiError(
            f"{role}/{ident} has a certificate already (--overwrite replaces and revokes it)"
        ) from None
    except (FileNotFoundError, ValueError) as exc:
        raise PkiError(str(exc)) from None
    click.echo(f"{info.spiffe.uri} serial={info.serial:x} cert={info.cert_path} key={info.key_path}")


@pki.command("revoke")
@click.argument("name_or_serial")
@click.pass_obj
def revoke(settings: Settings, name_or_serial: str) -> None:
    """Revoke ROLE/ID (its current certificate) or any certificate the CA issued, by serial (hex as `list`
    prints it, or 0x…, or decimal); servers pick it up without restart."""
    try:
        info = Pki(settings.pki_path).revoke(name_or_serial)
    except KeyError:
        raise PkiError(f"no certificate {name_or_serial!r} was issued by this CA") from None
    except (FileNotFoundError, ValueError) as exc:
        raise PkiError(str(exc)) from None
    click.echo(f"revoked {info.spiffe.uri} serial={info.serial:x}")


@pki.command("list")
@click.option("--all", "every", is_flag=True, help="every certificate ever issued (the issuance log)")
@click.pass_obj
def list_certs(settings: Settings, every: bool) -> None:
    """Each identity's current certificate with its serial, expiry and revocation (--all: every one ever
    issued, replaced ones included)."""
    p = Pki(settings.pki_path)
    try:
        if not every:
            for info in p.list():
                state = "REVOKED" if info.revoked else "valid"
                click.echo(f"{info.spiffe.uri:55} {info.serial:032x} {info.not_after:%Y-%m-%d} {state}")
            return
        revoked = load_revoked_serials(p.crl_path, p.ca_cert_path)
        for issued in p.issued():
            state = "REVOKED" if issued.serial in revoked else "valid"
            click.echo(f"{issued.uri:55} {issued.serial:032x} {issued.not_after:%Y-%m-%d} {state}")
    except (FileNotFoundError, ValueError) as exc:
        raise PkiError(str(exc)) from None


@pki.command("dev")
@click.pass_obj
def dev(settings: Settings) -> None:
    """Create the CA if absent and one certificate for every dev identity of every role."""
    issued = ensure_dev_pki(settings)
    click.echo(f"{len(issued)} certificate(s) issued in {settings.pki_path}")


def ensure_dev_pki(settings: Settings) -> list[str]:
    issued = Pki(settings.pki_path).ensure_dev(settings.trust_domain, DEV_IDENTITIES)
    return [i.spiffe.uri for i in issued]
