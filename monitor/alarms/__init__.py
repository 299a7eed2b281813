"""The alert engine: rules from config, pure evaluation, technical alarms, reminders, actions.

Layout: model.py (Rule, Cond, AlertEvent, records), rules.py (config → rules),
evaluate.py (pure: readings → transitions → alert changes), technical.py (device status and
heartbeats → technical conditions; `monitoring_state`), reminders.py (session → reminders),
actions.py (acknowledge / pause / reset), store.py (Redis I/O for one room), outbound.py
(MQTT + webhook), engine.py (`vitalwatch alerts`). See docs/alerts.md.
"""
