"""The simulated world and conformance harness."""
