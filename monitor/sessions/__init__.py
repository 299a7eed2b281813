"""Dosing sessions: lifecycle, session limits, archive, review, export."""
