"""The control plane: HTTP over a unix socket (server), its client, and the `ctl` verbs."""
