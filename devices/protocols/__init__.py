"""Pure protocol parsers and framers: bytes in, readings or refusals out."""
