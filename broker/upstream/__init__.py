"""The upstream wing: deployments, the router and its breakers, the retry budget, resilience
(retries and failover) and forwarding to provider workers over NATS.
"""
