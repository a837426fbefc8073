"""The replies wing: sinks that answer NATS, HTTP, Anthropic and batch callers, and stream
assembly (chunks to a completion and back).
"""
