"""Interoperability out: HL7 v2 ORU^R01 and FHIR R4 built from stored readings, sent via the outbox.

Pure builders (`rows`, `hl7_out`, `fhir`) turn archived or streamed readings into messages;
`senders` moves them (MLLP, HTTP); `outbound` decides what to send when (session end, live)
and runs the outbox senders inside `vitalwatch alerts`. Inbound HL7 is the devices' side
(devices/hl7_listener.py, devices/protocols/hl7_oru.py).
"""
