"""Storage: Redis connection, the loss-free stream writer and readers, spool, embedded servers, heartbeats, device status."""
