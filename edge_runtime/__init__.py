"""Process plumbing every role shares: connect, TLS, drain, tracing, discovery, logs, tables,
the embedded nats-server. It imports only the wire contract (``schemas``) of ours.
"""
