"""The Conclave node agent (`conclave-node`): pulls the signed approved set and verifies every byte.

Kept free of Django so it runs on nodes with only the agent's own
dependencies in use (httpx, cryptography, rfc8785, aleph-cid, tqdm).
"""
