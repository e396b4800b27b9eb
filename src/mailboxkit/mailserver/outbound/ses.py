"""Delivery through Amazon SES: the SESv2 ``SendEmail`` API with raw content, over HTTPS.

Implementation notes:

- The signed message goes byte-exact as ``Content.Raw.Data``; the envelope is
  ``FromEmailAddress`` (our envelope sender) and ``Destination`` (the envelope recipients; for
  raw content SES sends to these and leaves the message's own To/Cc as written, so Bcc
  recipients stay unnamed).
- SES accepts or refuses the message as a whole: one result for every recipient. Throttling,
  5xx and network errors are temporary; ``MessageRejected``, unverified identities, a suspended
  account and invalid parameters are permanent (retrying cannot help).
- The ``MessageId`` SES answers is kept on the recipients' rows (``Accepted.provider_id``): SES's
  bounce, complaint and delivery notifications name the message by it (``api/sesfeedback.py``).
- boto3 blocks, so each call runs in a thread. The client is made once, from its own session
  (no module-level default session): credentials come from the usual AWS chain.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from mailboxkit.mailserver.outbound.transport import (
    Accepted,
    Parcel,
    PermanentFailure,
    Result,
    TemporaryFailure,
    every,
)

log = logging.getLogger(__name__)

PERMANENT_ERRORS = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "BadRequestException",
        "InvalidParameterValue",
        "NotFoundException",
    }
)


def ses_client(region: str, endpoint_url: str | None = None) -> Any:
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session().client(
        "sesv2", region_name=region, endpoint_url=endpoint_url, config=config
    )


class SesTransport:
    per_domain = False

    def __init__(self, client: Any, *, configuration_set: str = "") -> None:
        self._client = client
        self._configuration_set = configuration_set

    def _send(self, parcel: Parcel) -> str:
        request: dict[str, Any] = {
            "FromEmailAddress": parcel.mail_from,
            "Destination": {"ToAddresses": list(parcel.recipients)},
            "Content": {"Raw": {"Data": parcel.data}},
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        response = self._client.send_email(**request)
        return str(response.get("MessageId", ""))

    async def deliver(self, parcel: Parcel) -> dict[str, Result]:
        try:
            ses_id = await asyncio.to_thread(self._send, parcel)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "Unknown"))
            text = " ".join(str(error.response.get("Error", {}).get("Message", "")).split())
            log.info("event=ses_refused code=%s", code)
            if code in PERMANENT_ERRORS:
                return every(parcel.recipients, PermanentFailure(f"554 5.7.1 SES {code}: {text}"))
            return every(parcel.recipients, TemporaryFailure(f"451 4.4.2 SES {code}: {text}"))
        except BotoCoreError as error:
            log.warning("event=ses_unreachable error=%s", type(error).__name__)
            return every(parcel.recipients, TemporaryFailure(f"451 4.4.1 SES: {error}"))
        accepted = Accepted(f"250 2.0.0 SES message id {ses_id}", "ses", provider_id=ses_id)
        return every(parcel.recipients, accepted)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
