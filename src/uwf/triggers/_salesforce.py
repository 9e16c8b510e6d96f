"""Salesforce outbound messages: the SOAP `notifications` call in, the `Ack` out.

The message's shape is fixed by Salesforce's outbound messaging WSDL
(https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html):
`notifications` carries `OrganizationId`, `ActionId`, optional `SessionId`, `EnterpriseUrl`,
`PartnerUrl` and 1–100 `Notification` elements, each an `Id` (stable across Salesforce's
retries, so it is the event id) and an `sObject` with the fields the admin chose. Salesforce
keeps re-sending until it gets `notificationsResponse` with `Ack` true.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree
from defusedxml import DefusedXmlException

__all__ = ["ACK", "OutboundMessage", "OutboundMessageError", "parse_outbound_message"]

_SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
_OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    "<soapenv:Body>"
    '<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<Ack>true</Ack>"
    "</notificationsResponse>"
    "</soapenv:Body>"
    "</soapenv:Envelope>"
)


class OutboundMessageError(ValueError):
    """The body is not a Salesforce outbound message."""


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    organization_id: str
    action_id: str
    # One event per notification: {id, organization_id, action_id, sobject_type, sobject}.
    notifications: list[dict[str, Any]]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: Element | None) -> str | None:
    if element is None or element.get(_XSI_NIL) == "true":
        return None
    return (element.text or "").strip()


def parse_outbound_message(body: bytes) -> OutboundMessage:
    """Parse the SOAP envelope; entity expansion and external references are refused.

    Raises:
        OutboundMessageError: not XML, or not a `notifications` message.
    """
    try:
        root = defusedxml.ElementTree.fromstring(body)
    except (DefusedXmlException, SyntaxError) as exc:  # ParseError is a SyntaxError
        raise OutboundMessageError(f"not a valid XML document: {exc}") from None
    if root.tag != f"{_SOAP}Envelope":
        raise OutboundMessageError("not a SOAP envelope")
    notifications = root.find(f"{_SOAP}Body/{_OUTBOUND}notifications")
    if notifications is None:
        raise OutboundMessageError("the SOAP body has no outbound-message `notifications`")
    organization = _text(notifications.find(f"{_OUTBOUND}OrganizationId"))
    action = _text(notifications.find(f"{_OUTBOUND}ActionId")) or ""
    if not organization:
        raise OutboundMessageError("`notifications` has no OrganizationId")
    events: list[dict[str, Any]] = []
    for item in notifications.findall(f"{_OUTBOUND}Notification"):
        notification_id = _text(item.find(f"{_OUTBOUND}Id"))
        sobject = item.find(f"{_OUTBOUND}sObject")
        if not notification_id or sobject is None:
            raise OutboundMessageError("a Notification lacks its Id or sObject")
        sobject_type = _local(sobject.get(_XSI_TYPE, "")).split(":")[-1]
        fields = {_local(child.tag): _text(child) for child in sobject}
        events.append(
            {
                "id": notification_id,
                "organization_id": organization,
                "action_id": action,
                "sobject_type": sobject_type,
                "sobject": fields,
            }
        )
    if not events:
        raise OutboundMessageError("`notifications` holds no Notification")
    return OutboundMessage(organization, action, events)
