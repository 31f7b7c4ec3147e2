"""The hostile corpus: malformed and malicious claim files, data, model folders and options.

Each folder under ``cases/`` is one case; ``harness.py`` describes the format.
"""
