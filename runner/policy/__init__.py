"""Pure decisions: scaling and provider control, retries, failure classification, fingerprints.

No I/O, no clock, no sleeping: state and time come in, a decision goes out.
"""
