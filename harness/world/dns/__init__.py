"""The world's DNS: zones and records, the answering rules (DNSSEC status, faults), and
:class:`~harness.world.dns.server.FakeDns`, which serves them over UDP and TCP.
"""
