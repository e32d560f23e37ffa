"""The pieces of a simulated world: DNS, policy hosts, receiving MTAs, proxy, report sink."""
