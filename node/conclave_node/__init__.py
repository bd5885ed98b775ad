"""What a Conclave node runs, free of Django.

The node agent (`conclave-node`: pulls the signed approved set and verifies
every byte), its wire format (`metadata`), download and install, the latency
sketch, the client library and the model runtimes. The platform imports from
this package; this package never imports Django or the platform.
"""
