"""The Consul adapter: connection, service registration and heartbeats, watches."""
