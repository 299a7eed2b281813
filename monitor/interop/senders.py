"""Outbox senders: how a message leaves, and what the receiver's answer means.

- `MllpSender`: one MLLP connection to `[hl7.outbound] url`, kept open between messages;
  sends a frame and waits `timeout_s` for the ACK. `AA`/`CA` → Delivered; `AE`/`AR`/`CE`/
  `CR` → Refused (the MSA/ERR text kept); no answer, a closed or refused connection, or an
  answer for another message → Retry (the connection is dropped, so a late answer cannot be
  taken for the next message's).
- `FhirSender`: POSTs a transaction Bundle to `[fhir] url`. 2xx → Delivered; 4xx (but 408
  and 429) → Refused with the server's OperationOutcome text; 408, 429, 5xx and network
  errors → Retry.
Both are callables `Message -> Outcome` for monitor/store/outbox.py.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from monitor.interop.hl7_out import read_ack
from monitor.model.mllp import MllpFramer, frame
from monitor.model.redact import redact_url
from monitor.store.outbox import Delivered, Message, Outcome, Refused, Retry

log = logging.getLogger(__name__)


class MllpSender:
    """Sends HL7 messages over one MLLP connection; see the module docstring."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        u = urlparse(url)
        if u.scheme != "mllp" or not u.hostname or not u.port:
            raise ValueError(f"not an mllp://host:port URL: {url!r}")
        self.host, self.port, self.timeout_s = u.hostname, u.port, timeout_s
        self._sock: socket.socket | None = None
        self._framer = MllpFramer()

    def close(self) -> None:
        """Drop the connection (the next message opens a new one)."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError as e:  # already gone: nothing left to release
                log.debug("closing the MLLP connection: %s", e)
            self._sock = None
            self._framer = MllpFramer()

    def __call__(self, msg: Message) -> Outcome:
        expected = msg.meta.get("control_id", "")
        try:
            if self._sock is None:
                self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            self._sock.settimeout(self.timeout_s)
            self._sock.sendall(frame(msg.body.encode("utf-8")))
            answer = self._read_frame()
        except (OSError, TimeoutError) as e:
            self.close()
            return Retry(f"{self.host}:{self.port}: {e.__class__.__name__}: {e}")
        if answer is None:
            self.close()
            return Retry(f"{self.host}:{self.port} closed the connection without answering")
        ack = read_ack(answer)
        if ack is None:
            self.close()
            return Retry(f"answer is not an HL7 ACK: {answer[:80]!r}")
        if expected and ack.control_id != expected:
            self.close()
            return Retry(f"answer is for message {ack.control_id!r}, not {expected!r}")
        text = answer.decode("utf-8", "replace")
        if ack.code in ("AA", "CA"):
            return Delivered(text)
        if ack.code in ("AE", "AR", "CE", "CR"):
            return Refused(f"{ack.code}: {ack.text or 'no reason given'}", text)
        self.close()
        return Retry(f"unknown acknowledgment code {ack.code!r}")

    def _read_frame(self) -> bytes | None:
        assert self._sock is not None
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {self.timeout_s:g} s")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no answer within {self.timeout_s:g} s") from None
            if not data:
                return None
            for piece in self._framer.feed(data):
                if isinstance(piece, bytes):
                    return piece


class FhirSender:
    """POSTs transaction Bundles to a FHIR server's base URL; see the module docstring."""

    def __init__(self, base_url: str, timeout_s: float = 15.0, *, context: ssl.SSLContext | None = None) -> None:
        self.url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.context = context

    def __call__(self, msg: Message) -> Outcome:
        req = urllib.request.Request(self.url, data=msg.body.encode("utf-8"), method="POST", headers={
            "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self.context) as resp:  # noqa: S310
                body = resp.read(65536).decode("utf-8", "replace")
                return Delivered(f"HTTP {resp.status} {body[:1000]}")
        except urllib.error.HTTPError as e:
            body = e.read(65536).decode("utf-8", "replace") if e.fp else ""
            if e.code in (408, 429) or e.code >= 500:
                return Retry(f"HTTP {e.code} from {redact_url(self.url)}")
            return Refused(f"HTTP {e.code}: {_outcome_text(body) or e.reason}", body[:4000])
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            return Retry(f"{redact_url(self.url)}: {getattr(e, 'reason', e)}")  # shown on /outbox


def _outcome_text(body: str) -> str:
    """The diagnostics of an OperationOutcome, if the body is one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200]
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code"))
                         for i in doc.get("issue", []) if isinstance(i, dict))[:500]
    return ""
