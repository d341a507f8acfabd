"""JSON Schemas of each protocol's ``configData`` (device protocol and property visitors)."""
