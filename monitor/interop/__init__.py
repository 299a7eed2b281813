"""Interoperability out: HL7 v2 ORU^R01 and FHIR R4 built from stored readings, sent via the outbox.

Pure builders (`rows`, `hl7_out`, `fhir`) turn archived or streamed readings into messages;
`senders` moves them (MLLP, HTTP). What to send when (session end, live) and the loop that
runs inside `vitalwatch alerts` is `monitor/sessions/outbound.py` (it reads sessions and the
archive, so it sits in the sessions layer above this package). Inbound HL7 is the devices'
side (devices/hl7_listener.py, devices/protocols/hl7_oru.py).
"""
