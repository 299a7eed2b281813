"""The Dash dashboard: nurse station overview, room pages, review pages, JSON API."""
