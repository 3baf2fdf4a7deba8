"""Client set-up documents, so that a user types only an address and a password: Thunderbird's
autoconfig XML, Outlook's autodiscover XML and an Apple configuration profile, each naming
[server] hostname and the ports of the mail services this server runs.

Pure: `answer` turns an HTTP request (protocols/http.py) into a response. Documents are built
with xml.etree and plistlib, which escape whatever comes from the request. The address asked
about is checked for syntax only, never looked up: the answer must not tell who has a mailbox.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from ..addresses import AddressError, normalize_address
from .http import Request, error, response
from .session import Reply

# The mail services a client is offered, best first: IMAP before POP3, implicit TLS before
# STARTTLS (RFC 8314 3.3), submission for sending ([smtp], port 25, is for other servers).
# Each: the service, the kind of server it is, how its TLS starts.
OFFERED = (("imaps", "imap", "SSL"), ("imap", "imap", "STARTTLS"),
           ("pop3s", "pop3", "SSL"), ("pop3", "pop3", "STARTTLS"),
           ("smtps", "smtp", "SSL"), ("submission", "smtp", "STARTTLS"))
# Thunderbird's placeholders, filled in by the client when the request named no address.
ANY_ADDRESS, ANY_DOMAIN = "%EMAILADDRESS%", "%EMAILDOMAIN%"
AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
# Stable profile UUIDs: the same address gets the same profile, which then replaces itself.
PROFILE_NAMESPACE = uuid.UUID("5d1e8c63-4f0b-4a53-9a47-2f4b3c1a7e10")


@dataclass(frozen=True)
class MailService:
    kind: str  # imap | pop3 | smtp
    port: int
    socket: str  # SSL (implicit TLS) | STARTTLS | plain (no certificate: CRAM-MD5 then)


@dataclass(frozen=True)
class ClientSettings:
    hostname: str
    services: tuple[MailService, ...]  # best first

    @classmethod
    def from_ports(cls, hostname: str, ports: dict[str, int], tls_available: bool) -> ClientSettings:
        """From the port of each service that runs; without a certificate only the services
        without implicit TLS, in plain text."""
        services = [MailService(kind, ports[name], socket if tls_available else "plain")
                    for name, kind, socket in OFFERED
                    if name in ports and (tls_available or socket != "SSL")]
        return cls(hostname, tuple(services))

    def best(self, kinds: tuple[str, ...]) -> MailService | None:
        return next((service for service in self.services if service.kind in kinds), None)


def answer(settings: ClientSettings, request: Request) -> Reply:
    route = ROUTES.get(request.path.lower())  # Outlook spells the path in either case
    if route is None:
        return error(404)
    method, document = route
    if request.method != method:
        return error(405, headers=(("Allow", method),))
    try:
        return document(settings, request)
    except AddressError as exc:
        return error(400, str(exc))


def _query_address(request: Request, required: bool) -> str | None:
    text = request.query.get("emailaddress", "")
    if not text:
        if required:
            raise AddressError("emailaddress=ADDRESS is needed")
        return None
    return normalize_address(text)


def _xml(root: ET.Element) -> Reply:
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return response(200, body, "application/xml; charset=utf-8")


def _add(parent: ET.Element, tag: str, text: str | int) -> None:
    ET.SubElement(parent, tag).text = str(text)


# Thunderbird: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat

THUNDERBIRD_AUTH = {"SSL": "password-cleartext", "STARTTLS": "password-cleartext",
                    "plain": "password-encrypted"}


def thunderbird(settings: ClientSettings, request: Request) -> Reply:
    address = _query_address(request, required=False)
    domain = address.rpartition("@")[2] if address else ANY_DOMAIN
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _add(provider, "domain", domain)
    _add(provider, "displayName", f"{domain} (mailforge on {settings.hostname})")
    _add(provider, "displayShortName", domain)
    for service in settings.services:
        tag = "outgoingServer" if service.kind == "smtp" else "incomingServer"
        server = ET.SubElement(provider, tag, type=service.kind)
        _add(server, "hostname", settings.hostname)
        _add(server, "port", service.port)
        _add(server, "socketType", service.socket)
        _add(server, "authentication", THUNDERBIRD_AUTH[service.socket])
        _add(server, "username", address or ANY_ADDRESS)
    return _xml(root)


# Outlook: [MS-OXDSCLI], the POX autodiscover request and its "outlook" response schema.

OUTLOOK_ENCRYPTION = {"SSL": "SSL", "STARTTLS": "TLS", "plain": "None"}


def outlook(settings: ClientSettings, request: Request) -> Reply:
    address = normalize_address(_requested_address(request.body))
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE)
    account = ET.SubElement(ET.SubElement(root, "Response", xmlns=OUTLOOK_RESPONSE), "Account")
    _add(account, "AccountType", "email")
    _add(account, "Action", "settings")
    for service in settings.services:
        protocol = ET.SubElement(account, "Protocol")
        _add(protocol, "Type", service.kind.upper())
        _add(protocol, "Server", settings.hostname)
        _add(protocol, "Port", service.port)
        _add(protocol, "DomainRequired", "off")
        _add(protocol, "LoginName", address)
        _add(protocol, "SPA", "off")
        _add(protocol, "SSL", "off" if service.socket == "plain" else "on")
        _add(protocol, "Encryption", OUTLOOK_ENCRYPTION[service.socket])
        _add(protocol, "AuthRequired", "on")
    return _xml(root)


def _requested_address(body: bytes) -> str:
    """The EMailAddress of an autodiscover request. A document type is refused before parsing:
    a request has none, and its entities are how XML bombs are made."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise AddressError("a document type declaration is not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise AddressError(f"the request is not XML: {exc}") from None
    for element in root.iter():
        if element.tag.rpartition("}")[2] == "EMailAddress" and element.text:
            return element.text.strip()
    raise AddressError("the request names no EMailAddress")


# Apple: a configuration profile with one com.apple.mail.managed payload (unsigned).

APPLE_ACCOUNT_TYPE = {"imap": "EmailTypeIMAP", "pop3": "EmailTypePOP"}
APPLE_AUTH = {"SSL": "EmailAuthPassword", "STARTTLS": "EmailAuthPassword",
              "plain": "EmailAuthCRAMMD5"}


def apple(settings: ClientSettings, request: Request) -> Reply:
    address = _query_address(request, required=True)
    assert address is not None
    incoming, outgoing = settings.best(("imap", "pop3")), settings.best(("smtp",))
    if incoming is None or outgoing is None:
        return error(404, "this server runs no service to read or to send mail with")
    identifier = f"mailforge.{settings.hostname}.{address}"
    account = {
        "PayloadType": "com.apple.mail.managed", "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.account",
        "PayloadUUID": _profile_uuid(f"{identifier}.account"),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address, "EmailAddress": address,
        "EmailAccountType": APPLE_ACCOUNT_TYPE[incoming.kind],
        "IncomingMailServerHostName": settings.hostname,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": incoming.socket != "plain",
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": APPLE_AUTH[incoming.socket],
        "OutgoingMailServerHostName": settings.hostname,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": outgoing.socket != "plain",
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": APPLE_AUTH[outgoing.socket],
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration", "PayloadVersion": 1,
        "PayloadIdentifier": identifier, "PayloadUUID": _profile_uuid(identifier),
        "PayloadDisplayName": f"Mail for {address}", "PayloadOrganization": settings.hostname,
        "PayloadContent": [account],
    }
    return response(200, plistlib.dumps(profile), "application/x-apple-aspen-config",
                    (("Content-Disposition", 'attachment; filename="mailforge.mobileconfig"'),))


def _profile_uuid(name: str) -> str:
    return str(uuid.uuid5(PROFILE_NAMESPACE, name)).upper()


THUNDERBIRD_PATH = "/mail/config-v1.1.xml"
ROUTES: dict[str, tuple[str, Callable[[ClientSettings, Request], Reply]]] = {
    THUNDERBIRD_PATH: ("GET", thunderbird),
    "/.well-known/autoconfig" + THUNDERBIRD_PATH: ("GET", thunderbird),
    "/autodiscover/autodiscover.xml": ("POST", outlook),
    "/apple/mailforge.mobileconfig": ("GET", apple),
}
