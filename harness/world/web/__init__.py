"""The web side of a world on one TLS server base: MTA-STS policy hosts, the TLS-RPT
report sink and the HTTP CONNECT proxy, with the values that say how they behave.
"""
