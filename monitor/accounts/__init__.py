"""Accounts and the audit log."""
